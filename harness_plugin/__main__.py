"""`python -m harness_plugin ARGS...`: lm-eval's command line with the antidistill model and tasks registered.

The same as `antidistill lm-eval ARGS...`; handy under `accelerate launch -m harness_plugin ARGS...`.
"""

import sys

from harness_plugin.lm_eval.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
