"""`python -m reenactbench` (also what torchrun starts)."""

from reenactbench.cli import main

main()
