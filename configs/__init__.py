"""Config files: `python main.py --config=configs/<name>.py[:argument]`; defaults.py holds the values."""
