"""The dataset build command."""
import numpy as np
import pytest

from ipcgan_jax.data import build


def test_builds_synthetic_dataset_with_an_overridden_split(tmp_path, capsys):
    assert build.main(["synthetic_aging", "--config=small_64", f"--data_dir={tmp_path}",
                       "--test_fraction=0.25"]) == 0
    out = capsys.readouterr().out
    assert "small_64_test_fraction0.25" in out
    builder = build.make_builder("synthetic_aging", data_dir=str(tmp_path), config="small_64",
                                 test_fraction=0.25)
    train = builder.as_data_source("train")
    test = builder.as_data_source("test")
    train_ids = {int(train[i]["identity"]) for i in range(len(train))}
    test_ids = {int(test[i]["identity"]) for i in range(len(test))}
    assert train_ids and test_ids and not train_ids & test_ids
    assert len(test_ids) == pytest.approx(0.25 * (len(train_ids) + len(test_ids)), abs=1)
    assert np.asarray(train[0]["image"]).shape == (64, 64, 3)


@pytest.mark.parametrize("argv, message", [
    (["cacd"], "needs --manual_dir"),
    (["cacd", "--manual_dir=/nonexistent/cacd"], "is not a folder"),
    (["synthetic_aging", "--config=nope"], "unknown config 'nope'"),
    (["synthetic_aging", "--csv_name=x.csv"], "--csv_name does not apply"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        build.main(argv)
    assert message in capsys.readouterr().err
