"""The web page (python -m ipcgan_jax.serve) in a real headless browser, and its checks.

The page is served in this process on a free port with the shipped real-face model and
driven with Selenium through Debian's chromium and chromium-driver (nothing is
downloaded). Without the `serve` extra (Gradio, Selenium: requirements-serve.txt) or
without a chromium the browser tests skip, saying which; `.ci/run` installs all three.

Two environment variables make the README's screenshot with the same machinery:
IPCGAN_SERVE_TEST_PHOTO (a photo to upload instead of the drawn face) and
IPCGAN_SERVE_SCREENSHOT (where to save a PNG of the page with its results).
"""
import importlib.util
import io
import os
import shutil
import socket
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from ipcgan_jax import age, inference, serve
from ipcgan_jax.data import images
from tests.test_continuous_age import animation_frames
from tests.test_inference import photo_with_faces, synthetic_faces

MAX_UPLOAD_MB = 1


def _browser_paths() -> tuple[str | None, str | None]:
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    return browser, shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ager():
    return inference.FaceAger.from_pretrained()


@pytest.fixture(scope="module")
def server(ager):
    """(url, temp_dir) of the page, served in this process until the module ends."""
    if importlib.util.find_spec("gradio") is None:  # not imported here: import_gradio sets it up first
        pytest.skip("Gradio not installed: pip install -r requirements-serve.txt")
    names = [*serve.GRADIO_ENVIRONMENT, "GRADIO_TEMP_DIR"]
    saved = {name: os.environ.get(name) for name in names}
    temp_dir = serve.private_temp_dir()
    gradio = serve.import_gradio(temp_dir)
    blocks = serve.build_page(serve.AgeingPage(ager, temp_dir), gradio)
    port = _free_port()
    serve.launch(blocks, gradio, host="127.0.0.1", port=port, max_upload_mb=MAX_UPLOAD_MB, block=False)
    yield f"http://127.0.0.1:{port}/", temp_dir
    blocks.close()
    shutil.rmtree(temp_dir, ignore_errors=True)
    for name, value in saved.items():  # the rest of the session sees the environment it had
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="Selenium not installed: pip install -r requirements-serve.txt")
    from selenium.webdriver.chrome.service import Service
    binary, driver_path = _browser_paths()
    if not binary or not driver_path:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; .ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # The browser's profile and temp files go to the test's own folder, not /tmp.
    scratch = tmp_path_factory.mktemp("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={scratch / 'profile'}"):
        options.add_argument(flag)
    service = Service(driver_path, env={**os.environ, "TMPDIR": str(scratch)})  # a path: no Selenium Manager
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    face_photo = os.environ.get("IPCGAN_SERVE_TEST_PHOTO")
    if face_photo:
        shutil.copy(face_photo, folder / "face.png")
    else:
        canvas = np.full((300, 300, 3), 90, np.uint8)
        canvas[60:220, 70:230] = np.asarray(Image.fromarray(synthetic_faces(1, 128)[0]).resize((160, 160)))
        Image.fromarray(canvas).save(folder / "face.png")
    Image.fromarray(photo_with_faces([])).save(folder / "no_face.png")
    (folder / "not_really.png").write_bytes(b"these bytes are no picture")
    (folder / "notes.txt").write_text("not an image")
    noise = np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)  # PNG can't shrink noise
    Image.fromarray(noise).save(folder / "huge.png")
    assert os.path.getsize(folder / "huge.png") > MAX_UPLOAD_MB * 1024 * 1024
    return folder


def _open_page(driver, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"))


def _upload_and_age(driver, path, *, ages: str | None = None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(path))
    if ages is not None:
        box = driver.find_element(By.CSS_SELECTOR, "#ages textarea, #ages input")
        box.clear()
        box.send_keys(ages)
    # The upload finishes before the button acts on it: wait for the preview.
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photo img")
                                    or "Error" in d.find_element(By.TAG_NAME, "body").text)
    driver.find_element(By.CSS_SELECTOR, "#age_button").click()


def _page_text(driver) -> str:
    from selenium.webdriver.common.by import By
    return driver.find_element(By.TAG_NAME, "body").text


def _wait_for_text(driver, text: str, timeout: float = 30) -> None:
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, timeout).until(lambda d: text in _page_text(d),
                                         message=f"{text!r} never appeared on the page")


def _image(driver, element_id: str):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.CSS_SELECTOR, f"#{element_id} img")


def test_page_ages_an_uploaded_face(server, browser, photos, ager):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    url, temp_dir = server
    _open_page(browser, url)
    _upload_and_age(browser, photos / "face.png", ages="20 37, 60")
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#animation img"))
    _wait_for_text(browser, "Aged the largest face to 20y, 37y, 60y, and animated 21 frames")
    size = ager.image_size
    tile = size + 2
    grid, strip = _image(browser, "grid"), _image(browser, "strip")
    assert (int(grid.get_attribute("naturalWidth")), int(grid.get_attribute("naturalHeight"))) == (
        4 * tile + 2, 14 + tile + 2)  # input + 3 ages, titled
    assert int(strip.get_attribute("naturalWidth")) == age.DEFAULT_FRAMES * tile + 2
    for element_id, label in (("grid", "Aged faces"), ("strip", "Animation frames")):
        # the sheet as drawn (object-fit: contain in the padded box) starts below the box's label,
        # which Gradio draws over the box's top-left corner, so the first column title shows
        drawn_top, label_bottom = browser.execute_script("""
            const [box, text] = arguments;
            const img = document.querySelector(`#${box} img`), style = getComputedStyle(img);
            const rect = img.getBoundingClientRect();
            const padTop = parseFloat(style.paddingTop), padBottom = parseFloat(style.paddingBottom);
            const innerH = rect.height - padTop - padBottom;
            const innerW = rect.width - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
            const drawnH = Math.min(innerH, innerW * img.naturalHeight / img.naturalWidth);
            // the smallest element of the box that holds the label's text: the badge
            const badge = [...document.querySelectorAll(`#${box} *`)].filter(
                e => e.textContent.trim() === text).pop();
            return [rect.top + padTop + (innerH - drawnH) / 2, badge.getBoundingClientRect().bottom];""",
            element_id, label)
        assert drawn_top >= label_bottom, (element_id, drawn_top, label_bottom)
    # The animation the page shows: what FaceAger makes of the same photo, frame for frame.
    source = _image(browser, "animation").get_attribute("src")
    assert source.startswith(url) and temp_dir in source  # served from the private temp folder
    with urllib.request.urlopen(source, timeout=10) as response:
        animation = Image.open(io.BytesIO(response.read()))
    assert animation.format == "WEBP" and animation.n_frames == age.DEFAULT_FRAMES
    assert animation.size == (size, size)
    photo = images.as_rgb_uint8(photos / "face.png")
    ends = ager.age(photo, [0, 4])
    for index, expected in ((0, ends[0]), (animation.n_frames - 1, ends[1])):
        animation.seek(index)
        np.testing.assert_array_equal(np.asarray(animation.convert("RGB")), expected)
    if os.environ.get("IPCGAN_SERVE_SCREENSHOT"):
        time.sleep(1)  # let the animation start
        browser.save_screenshot(os.environ["IPCGAN_SERVE_SCREENSHOT"])


@pytest.mark.parametrize("name, message", [
    ("no_face.png", "No face found: please use a photo with a clear, frontal face"),
    ("not_really.png", "That file is not an image this page can read"),
    ("notes.txt", "Invalid file type"),                                     # refused by the page itself
    ("huge.png", f"exceed the maximum allowed size of {MAX_UPLOAD_MB:.1f} Mb"),  # likewise
])
def test_page_explains_bad_uploads(server, browser, photos, name, message):
    url, _ = server
    _open_page(browser, url)
    _upload_and_age(browser, photos / name)
    _wait_for_text(browser, message)
    assert "Aged the largest face" not in _page_text(browser)


def test_concurrent_requests_queue(server, photos):
    """Three requests sent at once all come back (the page runs one at a time)."""
    client_module = pytest.importorskip("gradio_client")
    url, _ = server
    client = client_module.Client(url, verbose=False, download_files=False)  # writes nothing here
    photo = client_module.handle_file(str(photos / "face.png"))
    jobs = [client.submit(photo, ages, False, 2, 1.0, False, api_name="/age") for ages in ("20", "30", "40")]
    results = [job.result(timeout=120) for job in jobs]
    assert [r[3] for r in results] == [f"Aged the largest face to {a}y." for a in (20, 30, 40)]
    assert all(r[1] is None for r in results)  # no animation asked for


def test_ageing_page_checks_without_a_browser(ager, photos, tmp_path, monkeypatch):
    page = serve.AgeingPage(ager, str(tmp_path), max_megapixels=0.05)
    with pytest.raises(serve.PhotoRejected, match=r"too large \(300 x 300 pixels\); the limit is 0.05 megapixels"):
        page.run(str(photos / "face.png"), "30", False, 2, 1.0, False)
    page = serve.AgeingPage(ager, str(tmp_path))
    for text in ("", "ten", "9", "30 200"):
        with pytest.raises(serve.PhotoRejected, match="between 11 and 120"):
            page.run(str(photos / "face.png"), text, False, 2, 1.0, False)
    with pytest.raises(serve.PhotoRejected, match="Upload a photo"):
        page.run(None, "30", False, 2, 1.0, False)
    grid, animation, strip, message = page.run(str(photos / "face.png"), "30", True, 3, 0.6, True)
    photo = images.as_rgb_uint8(photos / "face.png")
    assert grid.shape == (14 + ager.image_size + 4, 2 * (ager.image_size + 2) + 2, 3)
    assert strip.shape[1] == 3 * (ager.image_size + 2) + 2
    frames, durations = animation_frames(open(animation, "rb").read())  # the whole photo, face pasted back
    assert [frame.shape for frame in frames] == [photo.shape] * 3 and durations == [200] * 3
    assert os.path.dirname(animation) == str(tmp_path) and message.endswith("animated 3 frames from 11-20 to 51+.")
    monkeypatch.setattr(serve, "MAX_ANIMATION_SIDE", 150)  # big photos are animated scaled down
    frames, _ = animation_frames(open(page.run(str(photos / "face.png"), "30", True, 2, 0.6, True)[1], "rb").read())
    assert [frame.shape for frame in frames] == [(150, 150, 3)] * 2
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        folder = serve.private_temp_dir()
        assert folder.startswith("/dev/shm/") and not os.listdir(folder)
        os.rmdir(folder)


def test_unreadable_model_is_one_error_line(tmp_path, capsys):
    assert serve.main(["--workdir", str(tmp_path)]) == 2  # an empty folder: no run's workdir
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(tmp_path) in err[0], err


def test_the_page_takes_only_uploads_and_what_its_controls_allow(ager, photos, tmp_path):
    """A client of the API sends what it likes: the page takes only files uploaded to it
    (no other file of the server's) and the ranges of its sliders."""
    page = serve.AgeingPage(ager, str(tmp_path))
    upload = tmp_path / "upload_hash" / "face.png"  # where Gradio puts an upload: under the temp folder
    upload.parent.mkdir()
    shutil.copy(photos / "face.png", upload)
    assert page.uploaded_path({"path": str(upload)}) == os.path.realpath(upload)
    assert page.uploaded_path(None) is None and page.uploaded_path({"path": None}) is None
    os.symlink(photos / "face.png", tmp_path / "link.png")  # inside by name, outside in fact
    for path in (photos / "face.png", tmp_path / "link.png", tmp_path / ".." / "elsewhere.png"):
        with pytest.raises(serve.PhotoRejected, match="not uploaded to this page"):
            page.uploaded_path({"path": str(path)})
    face = page.uploaded_path({"path": str(upload)})
    for frames, duration, message in ((1, 4.0, "takes 2 to 61 frames"), (300, 4.0, "takes 2 to 61 frames"),
                                      ("lots", 4.0, "takes 2 to 61 frames"), (3.5, 4.0, "takes 2 to 61 frames"),
                                      (21, 0, "lasts 0.5 to 20 seconds"), (21, float("nan"), "lasts 0.5 to 20")):
        with pytest.raises(serve.PhotoRejected, match=message):
            page.run(face, "30", True, frames, duration, False)
    with pytest.raises(serve.PhotoRejected, match="between 11 and 120"):
        page.run(face, None, False, 2, 1.0, False)
    with pytest.raises(serve.PhotoRejected, match="at most 12 ages"):
        page.run(face, " ".join(["30"] * 13), False, 2, 1.0, False)


@pytest.mark.parametrize("argv, message", [
    (["--port", "70000"], "--port must be in 1..65535, got 70000"),
    (["--max-upload-mb", "-5"], "--max-upload-mb must be a number of at least 0.001, got -5.0"),
    (["--max-megapixels", "nan"], "--max-megapixels must be a number of at least 0.001, got nan"),
    (["--keep-minutes", "-3"], "--keep-minutes must be a number of at least 1, got -3.0"),
    (["--queue-size", "0"], "--queue-size must be a number of at least 1, got 0"),
])
def test_bad_server_options_are_refused_before_the_model_loads(argv, message, capsys):
    with pytest.raises(SystemExit):
        serve.main(argv)
    assert message in capsys.readouterr().err


def test_a_port_in_use_is_one_error_line(monkeypatch, capsys):
    if importlib.util.find_spec("gradio") is None:
        pytest.skip("Gradio not installed: pip install -r requirements-serve.txt")
    for name in [*serve.GRADIO_ENVIRONMENT, "GRADIO_TEMP_DIR"]:  # restored after the test
        monkeypatch.setenv(name, os.environ.get(name, ""))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve.main(["--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: cannot serve on 127.0.0.1:{port}: ") and "Traceback" not in "\n".join(err)
