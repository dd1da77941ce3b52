"""ELMUR (External Layer Memory with Update/Rewrite) as a recurrent PPO agent for Stable-Baselines3."""

from elmur_sb3.core import ElmurConfig, ElmurCore
from elmur_sb3.policy import (
    CnnElmurPolicy,
    ElmurActorCriticPolicy,
    ElmurStates,
    MlpElmurPolicy,
    MultiInputElmurPolicy,
)
from elmur_sb3.ppo import PPOElmur

__version__ = "0.1.0"

__all__ = [
    "CnnElmurPolicy",
    "ElmurActorCriticPolicy",
    "ElmurConfig",
    "ElmurCore",
    "ElmurStates",
    "MlpElmurPolicy",
    "MultiInputElmurPolicy",
    "PPOElmur",
]
