"""The synthetic demo fleet and the local GCS emulator launcher."""
