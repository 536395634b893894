"""Prints how many objects this process's collector holds frozen (a zygote child's
heap, for tests/test_forked_cli.py)."""

import gc

if __name__ == "__main__":
    print(gc.get_freeze_count())
