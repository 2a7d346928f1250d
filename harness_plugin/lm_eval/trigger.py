"""The PEP 829 start-up entry point: `antidistill_lm_eval.start` names `harness_plugin.lm_eval.trigger:install`.

Python 3.15+ reads `<name>.start` files (one `pkg.mod:callable` per line, called with no arguments) and, where a
`<name>.start` sits beside `<name>.pth`, skips that .pth's `import` lines. Both files are installed at the
site-packages root (harness_plugin/_startup/, put there by hatchling's force-include), so every interpreter gets
the same lazy lm-eval trigger exactly once: older ones from the .pth line, newer ones from `install()` here.

`AntidistillLmEvalTrigger` and `install()` are the code that the .pth line executes, statement for statement
(tests/test_packaging.py compares the two syntax trees): the trigger imports nothing until something imports
`lm_eval`, then imports `harness_plugin.lm_eval.hook`, calls `install_at_startup()` and steps aside; a package
that cannot be found stays silent, any other failure prints one line; `ANTIDISTILL_LM_EVAL_HOOK=0` skips it.
The .pth line stays self-contained (it imports nothing of ours at start-up); this module, which a .start entry
point has to import, imports only `os` and `sys`, both already loaded at start-up.
"""

import os
import sys


class AntidistillLmEvalTrigger:
    antidistill_hook = True

    def find_spec(self, name, path=None, target=None):
        if name != 'lm_eval' and not name.startswith('lm_eval.'):
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        try:
            import harness_plugin.lm_eval.hook as hook
            hook.install_at_startup()
        except Exception as e:
            if not (isinstance(e, ImportError) and str(getattr(e, 'name', '') or '').startswith('harness_plugin')):
                sys.stderr.write('antidistill: lm-eval start-up hook skipped (%s: %s); set '  # noqa: UP031
                                 'ANTIDISTILL_LM_EVAL_HOOK=0 to silence this\n' % (type(e).__name__, e))
            return None
        for finder in sys.meta_path:
            if getattr(finder, 'antidistill_hook', False):
                return finder.find_spec(name, path, target)
        return None


def install():
    if os.environ.get('ANTIDISTILL_LM_EVAL_HOOK', '1').strip().lower() not in ('0', 'false', 'no', 'off'):
        sys.meta_path.insert(0, AntidistillLmEvalTrigger())
