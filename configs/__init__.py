"""Config files: `python main.py --config=configs/<name>.py[:variant]`."""
