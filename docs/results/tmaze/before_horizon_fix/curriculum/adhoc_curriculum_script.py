import sys, torch as th, numpy as np
th.set_num_threads(1)
from envs import make_vec_env
from elmur_sb3 import PPOElmur
from stable_baselines3.common.evaluation import evaluate_policy
length, steps, K, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
src = sys.argv[5] if len(sys.argv) > 5 else "/tmp/tmz/tmaze-30/runs/tmaze-30__ppo-elmur__s0/final_model.zip"
m = PPOElmur.load(src, env=make_vec_env(f"tmaze-{length}", n_envs=32, seed=seed), bptt_segments=K, seed=seed)
print("K", m.bptt_segments, m.rollout_buffer.bptt_segments)
for i in range(steps // 50_000):
    m.learn(50_000, reset_num_timesteps=False)
    res = {}
    for L in (length, 1000, 10000):
        ev = make_vec_env(f"tmaze-{L}", n_envs=32, seed=1000 + i)
        _, _ = evaluate_policy(m, ev, n_eval_episodes=32, deterministic=True)
        # success = return > 0.5 (only the right goal pays 1)
        r, _ = evaluate_policy(m, ev, n_eval_episodes=32, deterministic=True, return_episode_rewards=True)
        res[L] = float(np.mean(np.array(r) > 0.5))
    print(m.num_timesteps, res, flush=True)
m.save(sys.argv[6] if len(sys.argv) > 6 else f"/tmp/tune/curr_{length}")
