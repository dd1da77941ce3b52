"""Probe: the curriculum step with Adam switched to AMSGrad after --trained-agent loads the saved optimizer.

Usage: python amsgrad_curriculum.py <train.py args...>  (run from a worktree root)
load_trained_agent restores the saved optimizer's hyperparameters (amsgrad=False), so the switch is made
after it: the running maximum of the second moment starts at the loaded second moment.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))
import agents.session as session  # noqa: E402

original = session.load_trained_agent


def load_then_amsgrad(model, path):
    original(model, path)
    optimizer = model.policy.optimizer
    for group in optimizer.param_groups:
        group["amsgrad"] = True
        for p in group["params"]:
            state = optimizer.state[p]
            state["max_exp_avg_sq"] = state["exp_avg_sq"].clone()
    print("probe: optimizer switched to AMSGrad, eps", optimizer.param_groups[0]["eps"], flush=True)


session.load_trained_agent = load_then_amsgrad
from agents.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
