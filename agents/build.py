"""How one run's pieces are built from its :class:`~agents.experiment.Experiment`: the training and evaluation envs, a new model, and a saved model checked and loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.experiment import Experiment
from agents.hyperparams import HyperparamError, to_constructor_kwargs
from agents.registry import algo_that_saved
from agents.rundir import RunError, checkpoint_vecnormalize


def _normalize_kwargs(normalize: Any) -> dict[str, Any] | None:
    if not normalize:
        return None
    return dict(normalize) if isinstance(normalize, dict) else {}


def make_train_env(exp: Experiment, monitor_dir: Path | None, seed: int) -> Any:
    """
    :param exp: the experiment
    :param monitor_dir: where the Monitor files go (None: not written)
    :param seed: seed of env 0 (env i gets seed + i inside ``envs.make_vec_env``)
    :return: the training VecEnv, wrapped in VecNormalize when the preset asks for it
    """
    import envs
    from stable_baselines3.common.vec_env import VecNormalize

    hp = exp.hyperparams
    venv = envs.make_vec_env(
        exp.env,
        n_envs=hp["n_envs"],
        seed=seed,
        prev_action=hp["prev_action"],
        env_kwargs=hp["env_kwargs"],
        monitor_dir=str(monitor_dir) if monitor_dir is not None else None,
    )
    norm = _normalize_kwargs(hp.get("normalize"))
    if norm is not None:
        venv = VecNormalize(venv, gamma=hp.get("gamma", 0.99), **norm)
    return venv


def make_eval_env(exp: Experiment, seed: int, n_episodes: int, vecnormalize_path: Path | None = None) -> Any:
    """
    :param exp: the experiment (its ``eval_env`` is built)
    :param seed: seed of eval env 0
    :param n_episodes: episodes per evaluation; no more envs than that are built
    :param vecnormalize_path: saved VecNormalize statistics to load (``--eval-only``); during training
        the EvalCallback syncs them from the training env instead
    :return: the evaluation VecEnv
    """
    import envs
    from stable_baselines3.common.vec_env import VecNormalize

    hp = exp.hyperparams
    n_eval_envs = max(1, min(hp["n_eval_envs"], n_episodes))
    venv = envs.make_vec_env(
        exp.eval_env,
        n_envs=n_eval_envs,
        seed=seed,
        prev_action=hp["prev_action"],
        env_kwargs=hp["env_kwargs"],
        monitor_dir=None,
    )
    norm = _normalize_kwargs(hp.get("normalize"))
    if norm is not None:
        if vecnormalize_path is not None and vecnormalize_path.exists():
            venv = VecNormalize.load(str(vecnormalize_path), venv)
        else:
            venv = VecNormalize(venv, gamma=hp.get("gamma", 0.99), **norm)
        venv.training = False
        venv.norm_reward = False  # report true returns
    return venv


def build_model(exp: Experiment, env: Any, tb_dir: Path | None, device: str, verbose: int = 0) -> Any:
    """
    :param exp: the experiment; its hyperparameters are read, never changed
    :param env: the training VecEnv
    :param tb_dir: where TensorBoard writes (None: no TensorBoard)
    :param device: torch device ("auto", "cpu", "cuda")
    :param verbose: SB3 verbosity
    :return: a new model of the experiment's algorithm, with the policy of :meth:`Experiment.with_policy`
    """
    exp = exp.with_policy(env.observation_space)
    algo_kwargs, _ = to_constructor_kwargs(exp.hyperparams)
    try:
        return exp.spec.load_class()(
            exp.hyperparams["policy"],
            env,
            seed=exp.seed,
            device=device,
            verbose=verbose,
            tensorboard_log=str(tb_dir) if tb_dir is not None else None,
            **algo_kwargs,
        )
    except (ValueError, TypeError) as exc:  # the algorithm's and policy's own checks of a value (--hp, preset)
        raise HyperparamError(f"{exp.spec.name} rejects its hyperparameters: {str(exc).splitlines()[0]}") from exc


def check_model_zip(model_path: Path, algo: str | None, flag: str) -> tuple[Path, str]:
    """
    :param model_path: a model zip given on the command line
    :param algo: the algorithm it must have been saved by, or None to accept any registered one
    :param flag: the flag that named it (``--trained-agent``, ``--eval-only``), for the message
    :return: the resolved path and the algorithm that saved it
    :raises RunError: when the file is missing, is no SB3 model zip, or was saved by another algorithm
    """
    path = Path(model_path).expanduser().resolve()
    expected = "expected a .zip saved by train.py or model.save"
    if not path.is_file():
        raise RunError(f"{flag} {model_path}: no such model file ({expected})")
    saved_by = algo_that_saved(path)
    if saved_by is None:
        raise RunError(f"{flag} {model_path}: not an SB3 model zip of a registered algorithm ({expected})")
    if algo is not None and saved_by.name != algo:
        raise RunError(f"{flag} {model_path} was saved by {saved_by.name}, not by {algo}; pass --algo {saved_by.name}")
    return path, saved_by.name


def load_trained_agent(model: Any, model_path: Path) -> None:
    """
    Start ``model`` from the weights of a saved model, keeping the new run's env and
    hyperparameters (rl-zoo3's ``--trained-agent``): a curriculum step, e.g. tmaze-30 then tmaze-100.
    The policy weights and the optimiser's state carry over (SB3's ``set_parameters``); the
    learning rate and everything else come from the new run's preset and ``--hp``.
    VecNormalize statistics saved with the model replace the new run's initial ones.

    :param model: the freshly built model of the new run
    :param model_path: a zip checked by :func:`check_model_zip`
    """
    from stable_baselines3.common.vec_env import VecNormalize

    try:
        model.set_parameters(str(model_path), exact_match=True, device=model.device)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(
            f"--trained-agent {model_path}: its network does not match this run's policy ({first}); "
            "use the same policy_kwargs as the run that saved it"
        ) from exc
    saved_stats = checkpoint_vecnormalize(model_path)
    vecnorm = model.get_vec_normalize_env()
    if vecnorm is not None and saved_stats is not None:
        loaded = VecNormalize.load(str(saved_stats), model.get_env())
        vecnorm.obs_rms, vecnorm.ret_rms = loaded.obs_rms, loaded.ret_rms
