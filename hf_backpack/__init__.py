"""The Backpack's Hugging Face modeling code, copied by export_hf.py beside the weights of an export (its
auto_map points at the copies); importable here as a package for the tests."""
