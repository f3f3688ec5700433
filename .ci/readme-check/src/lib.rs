//! Empty: the README's blocks are this crate's examples (written by `run.py`).
