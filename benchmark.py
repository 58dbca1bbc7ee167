#!/usr/bin/env python3
"""Benchmark ResNet/ResNeXt variants over a YAML grid. See README.md or --help."""
import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
