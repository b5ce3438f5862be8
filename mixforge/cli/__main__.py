"""`python -m mixforge.cli ...`, as the `mixforge` console script."""

from mixforge.cli import main

main()
