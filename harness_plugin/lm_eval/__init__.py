"""The lm-evaluation-harness integration: `lm_eval --model antidistill` and this package's tasks.

- `model.py`: `AntidistillLM`, lm-eval's `HFLM` with our logits processor and answer forcing;
- `settings.py`: its model_args, validated before any weights load;
- `tasks/`: the GSM8K and MATH task yamls and their protocol (prompt, data, scoring);
- `hook.py` and `trigger.py`: the start-up hook that lets lm-eval 0.4.x find the model and the tasks;
- `tracking.py`: MLflow logging of an lm-eval run; `cli.py`: `antidistill lm-eval` and `antidistill tasks-path`.

Nothing is imported here: the start-up trigger imports this package at every interpreter start.
"""
