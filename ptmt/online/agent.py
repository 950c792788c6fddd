"""The reinforcement-learning agent: PPO (stable-baselines3) over the tuning environment.

Why PPO: the action space is small and discrete (``1 + 2·knobs``), rewards are noisy and
non-stationary (placement converges over minutes), and PPO's clipped updates stay stable there
without replay-buffer tuning; it is also what the original PTMT used, which keeps comparisons fair.

A trained agent is one file (``.ptmt-agent``, a zip) holding

- ``meta.json``: format, backend, catalog hash, observation schema (version and feature names),
  knob schema (the ladders) and its hash, algorithm, network shape, training settings, scenarios,
  figures measured after training, PTMT version;
- ``policy.npz``: the policy network's weights as NumPy arrays (read with ``allow_pickle=False``:
  loading a model file runs no code, unlike pickled SB3 zips). Deciding is a NumPy forward pass
  (two tanh layers and a softmax), so the daemon never imports PyTorch: it decides in tens of
  microseconds and stays small in memory.

:func:`load_agent` refuses a file whose backend, catalog hash, observation schema or knob ladders
differ from the caller's, naming what differs and how to rebuild it (``ptmt train``).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ptmt import __version__
from ptmt.catalog import Catalog
from ptmt.errors import PtmtError
from ptmt.online import observation
from ptmt.online.knobspace import KnobSpace

AGENT_FORMAT = 1
SUFFIX = ".ptmt-agent"
#: Policy and value networks: two small hidden layers keep a decision well under a millisecond.
NET_ARCH = (64, 64)
_PI = "mlp_extractor.policy_net."
#: The original PTMT's discount (0.9): tuning rewards are immediate, long horizons only add noise.
DEFAULT_PPO = {"learning_rate": 3e-4, "n_steps": 240, "batch_size": 60, "n_epochs": 8, "gamma": 0.9,
               "gae_lambda": 0.9, "ent_coef": 0.01, "clip_range": 0.2}


class AgentError(PtmtError):
    """An agent cannot be trained, read or used."""


class AgentMismatch(AgentError):
    """A stored agent was trained for another backend, catalog, observation or knob schema."""


def shipped_agent_path(backend: str) -> Path:
    """The pretrained agent that ships with PTMT for *backend* (may not exist for every backend)."""
    return Path(str(resources.files("ptmt").joinpath("agents", f"{backend}{SUFFIX}")))


class Agent:
    """A policy ready to decide: ``decide(obs, legal)`` -> action index."""

    def __init__(self, meta: dict[str, Any], weights: Mapping[str, np.ndarray]) -> None:
        self.meta = meta
        self.weights = {k: np.asarray(v, np.float64) for k, v in weights.items()}
        self._layers = sorted({int(k.split(".")[2]) for k in self.weights if k.startswith(_PI)})

    @property
    def backend(self) -> str:
        return str(self.meta["backend"])

    def probabilities(self, obs: np.ndarray) -> np.ndarray:
        """The policy's action distribution: SB3's MlpPolicy forward pass (tanh layers, softmax)."""
        w = self.weights
        h = np.asarray(obs, np.float64)
        for i in self._layers:
            h = np.tanh(w[f"{_PI}{i}.weight"] @ h + w[f"{_PI}{i}.bias"])
        logits = w["action_net.weight"] @ h + w["action_net.bias"]
        e = np.exp(logits - logits.max())
        return e / e.sum()

    def ranked(self, obs: np.ndarray, legal: Sequence[bool] | None = None) -> list[tuple[int, float]]:
        """Legal actions with their probabilities, most likely first."""
        p = self.probabilities(obs)
        order = np.argsort(-p, kind="stable")
        return [(int(a), float(p[a])) for a in order if legal is None or legal[a]]

    def decide(self, obs: np.ndarray, legal: Sequence[bool] | None = None) -> int:
        """The most likely legal action (deterministic: the same observation, the same decision)."""
        ranked = self.ranked(obs, legal)
        return ranked[0][0] if ranked else 0

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **self.weights)
        tmp = path.with_name(path.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("meta.json", json.dumps(self.meta, indent=1, sort_keys=True, default=str))
            z.writestr("policy.npz", buf.getvalue())
        tmp.replace(path)
        return path


def expected_meta(catalog: Catalog, space: KnobSpace) -> dict[str, Any]:
    return {"backend": catalog.name, "catalog_hash": catalog.hash,
            "observation": observation.schema(space.names), "knob_schema": space.schema(),
            "knob_schema_hash": space.schema_hash()}


def load_agent(path: str | Path, *, catalog: Catalog | None = None, space: KnobSpace | None = None) -> Agent:
    """Read an agent; with *catalog* and *space* given, refuse one that does not fit them."""
    path = Path(path)
    if not path.is_file():
        raise AgentError(f"no agent at {path}; train one with `ptmt train --backend "
                         f"{catalog.name if catalog else 'B'}`")
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("meta.json"))
            with np.load(io.BytesIO(z.read("policy.npz")), allow_pickle=False) as npz:
                weights = {k: npz[k] for k in npz.files}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise AgentError(f"{path} is not a PTMT agent file ({exc})") from None
    retrain = f"retrain with `ptmt train --backend {catalog.name if catalog else meta.get('backend')}`"
    if meta.get("format") != AGENT_FORMAT:
        raise AgentMismatch(f"agent {path}: file format {meta.get('format')}, this PTMT reads format "
                            f"{AGENT_FORMAT}; {retrain}")
    if catalog is not None and space is not None:
        want = expected_meta(catalog, space)
        if meta.get("backend") != want["backend"]:
            raise AgentMismatch(f"agent {path}: trained for backend {meta.get('backend')}, not "
                                f"{want['backend']}; {retrain}")
        if meta.get("catalog_hash") != want["catalog_hash"]:
            raise AgentMismatch(f"agent {path}: trained with catalog hash {meta.get('catalog_hash')} of "
                                f"backend {meta.get('backend')}, the current catalog hash is "
                                f"{want['catalog_hash']}; {retrain}")
        if meta.get("knob_schema_hash") != want["knob_schema_hash"]:
            have = [k["name"] for k in meta.get("knob_schema", {}).get("knobs", [])]
            raise AgentMismatch(f"agent {path}: trained on knobs {', '.join(have)} with other ladders "
                                f"than the tuned knobs {', '.join(space.names)}; {retrain} "
                                "(with the same --leave-alone knobs)")
        obs = meta.get("observation", {})
        if obs.get("version") != want["observation"]["version"] or obs.get("features") != want["observation"]["features"]:
            raise AgentMismatch(f"agent {path}: observation schema version {obs.get('version')} "
                                f"({len(obs.get('features', []))} features), this PTMT builds version "
                                f"{want['observation']['version']} ({len(want['observation']['features'])} "
                                f"features); {retrain}")
    n_obs = len(meta["observation"]["features"])
    n_actions = 1 + 2 * len(meta["knob_schema"]["knobs"])
    first = weights.get(f"{_PI}0.weight")
    head = weights.get("action_net.weight")
    if first is None or head is None or first.shape[1] != n_obs or head.shape[0] != n_actions:
        raise AgentError(f"{path}: policy weights do not fit the recorded schema ({n_obs} observations, "
                         f"{n_actions} actions)")
    return Agent(meta, weights)


def train(backend: str, *, timesteps: int = 20_000, catalog: Catalog | None = None,
          knobs: Sequence[str] | None = None, workloads: Sequence[str] | None = None, seed: int = 0,
          interval: float = 10.0, episode_intervals: int = 60, n_envs: int = 1,
          ppo: Mapping[str, Any] | None = None, progress: bool = False) -> Agent:
    """Pretrain an agent on the simulated machine across scenarios (workloads x machines x sizes)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from ptmt.catalog import load_catalog
    from ptmt.online.env import SUITE, ScenarioSampler, SimTuningEnv

    catalog = catalog or load_catalog(backend)
    space = KnobSpace(catalog, knobs)
    suite = list(workloads or SUITE)
    torch.set_num_threads(1)
    sampler = ScenarioSampler(suite)

    def make() -> SimTuningEnv:
        return SimTuningEnv(backend, scenarios=sampler, interval=interval, episode_intervals=episode_intervals,
                            knobs=space.names, catalog=catalog, start="random")

    vec_cls = SubprocVecEnv if n_envs > 1 else DummyVecEnv
    # fork: the workers need nothing re-imported, and a script without a __main__ guard still works
    env = make_vec_env(make, n_envs=n_envs, seed=seed, vec_env_cls=vec_cls,
                       vec_env_kwargs={"start_method": "fork"} if n_envs > 1 else None)
    params = {**DEFAULT_PPO, **dict(ppo or {})}
    params["n_steps"] = max(8, int(params["n_steps"]) // n_envs)
    model = PPO("MlpPolicy", env, seed=seed, verbose=0, device="cpu",
                policy_kwargs={"net_arch": list(NET_ARCH)}, **params)
    t0 = time.perf_counter()
    model.learn(total_timesteps=int(timesteps), progress_bar=progress)
    took = time.perf_counter() - t0
    env.close()
    meta = {"format": AGENT_FORMAT, **expected_meta(catalog, space), "algorithm": "PPO",
            "net_arch": list(NET_ARCH), "ppo": params, "timesteps": int(timesteps), "seed": seed,
            "interval_s": interval, "episode_intervals": episode_intervals, "workloads": suite,
            "n_envs": n_envs, "train_seconds": round(took, 1), "ptmt_version": __version__,
            "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    weights = {k: v.detach().cpu().numpy() for k, v in model.policy.state_dict().items()
               if k.startswith(_PI) or k.startswith("action_net.")}
    agent = Agent(json.loads(json.dumps(meta, default=str)), weights)
    # the NumPy forward pass must give SB3's own distribution
    probe = np.random.default_rng(seed).uniform(-3, 3, (16, model.observation_space.shape[0])).astype(np.float32)
    with torch.no_grad():
        ref = model.policy.get_distribution(torch.as_tensor(probe)).distribution.probs.numpy()
    err = float(max(np.abs(agent.probabilities(o) - r).max() for o, r in zip(probe, ref, strict=True)))
    if err > 1e-5:
        raise AgentError(f"the NumPy policy differs from the trained one by {err:.2g}")
    agent.meta["numpy_forward_max_error"] = err
    return agent
