"""Experiment trackers (`report_to`), as TRL and transformers name them: tensorboard, wandb, mlflow
or none, any list of them. SFT, reward-model training, PPO and evaluation log through one
`Trackers`: per-step metrics, PPO's drift evaluations, and final results with their n and 95% CI.

- tensorboard: event files in OUT/tb (torch's SummaryWriter; tensorboard comes with the install).
- wandb: `pip install 'hrlaif-harness[wandb]'`; project $WANDB_PROJECT (default hrlaif), files under
  OUT/wandb; WANDB_MODE=offline logs without a network (`wandb sync` uploads later).
- mlflow: `pip install 'hrlaif-harness[mlflow]'`; $MLFLOW_TRACKING_URI (default: a file store in
  OUT/mlruns; for a file store MLFLOW_ALLOW_FILE_STORE=true is set, which MLflow 3 asks for),
  experiment $MLFLOW_EXPERIMENT_NAME (default hrlaif); the config goes in as params.
A tracker whose library is missing is a one-line setting error naming the extra to install.
"""
from __future__ import annotations

import importlib.util
import math
import os
import re
import time
from pathlib import Path

from hrlaif.core.errors import UserError
from hrlaif.core.settings import setting

TRACKERS = ("none", "tensorboard", "wandb", "mlflow")
MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # tracker: import name (= extra)


def check_report_to(names: list[str]) -> str | None:
    if "none" in names and len(names) > 1:
        return f"'none' cannot be combined with trackers (got {', '.join(names)})"
    for n in names:
        if n in MODULES and importlib.util.find_spec(MODULES[n]) is None:
            pkg = "tensorboard" if n == "tensorboard" else f"hrlaif-harness[{n}]"
            return f"{n} is not installed: pip install '{pkg}'"
    return None


def report_to_setting(*default: str):
    """The `report_to` field of a stage's settings (default: no tracker, or the trackers named)."""
    return setting(default_factory=lambda: list(default), choices=TRACKERS, check=check_report_to,
                   help="experiment trackers, a list: tensorboard (OUT/tb), wandb ($WANDB_PROJECT; WANDB_MODE="
                        "offline works without a network), mlflow ($MLFLOW_TRACKING_URI, default OUT/mlruns), "
                        "or none (also: empty); per-step metrics, drift evaluations, final results with 95% CIs")


def flat(d: dict | None, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def numbers(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def result_metrics(results: dict[str, dict], prefix: str) -> dict[str, float]:
    """{prefix/bench/score, .../ci_lo, .../ci_hi, .../n} of results.json-style entries."""
    out = {}
    for bench, e in results.items():
        ci = e.get("ci95") or [None, None]
        out.update(numbers({f"{prefix}/{bench}/score": e.get("score"), f"{prefix}/{bench}/ci_lo": ci[0],
                            f"{prefix}/{bench}/ci_hi": ci[1], f"{prefix}/{bench}/n": e.get("n")}))
    return out


class _TensorBoard:
    def __init__(self, out: Path, name: str, config: dict, stage: str, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter
        self.w = SummaryWriter(str(out / "tb"), purge_step=purge_step)

    def log(self, m: dict[str, float], step: int | None) -> None:
        for k, v in m.items():
            self.w.add_scalar(k, v, step)
        self.w.flush()

    def summary(self, m: dict[str, float]) -> None:
        self.log(m, None)

    def close(self) -> None:
        self.w.close()


class _WandB:
    def __init__(self, out: Path, name: str, config: dict, stage: str, purge_step: int | None):
        import wandb
        (out / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "hrlaif"), name=name, dir=str(out),
                              config=config, job_type=stage)
        self.last = -1

    def log(self, m: dict[str, float], step: int | None) -> None:
        if step is not None and step >= self.last:  # wandb drops steps that go back
            self.last = step
            self.run.log(m, step=step)
        else:
            self.run.log(m)

    def summary(self, m: dict[str, float]) -> None:
        self.run.summary.update(m)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, out: Path, name: str, config: dict, stage: str, purge_step: int | None):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (out / "mlruns").resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:  # MLflow 3 asks file stores to opt in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        exp_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "hrlaif")
        exp = self.client.get_experiment_by_name(exp_name)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(exp_name)
        self.run_id = self.client.create_run(exp_id, run_name=name, tags={"stage": stage}).info.run_id
        params = [Param(_key(k), str(v)[:6000]) for k, v in config.items()]
        for i in range(0, len(params), 100):  # log_batch takes at most 100 params
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.uri = uri

    def log(self, m: dict[str, float], step: int | None) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(_key(k), v, now, step or 0) for k, v in m.items()])

    def summary(self, m: dict[str, float]) -> None:
        self.log(m, None)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _key(k: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", k)  # the characters MLflow accepts in names


SINKS = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


class Trackers:
    """The trackers of one stage; `log` per-step metrics, `results` final (or drift) results with CIs.
    With no tracker (`none`, or an empty list) every call does nothing."""

    def __init__(self, report_to: list[str] | None, out: Path | str, name: str, config: dict | None = None,
                 stage: str = "", purge_step: int | None = None):
        names = [n for n in (report_to or []) if n != "none"]
        problem = check_report_to(names)
        if problem:
            raise UserError(f"report_to: {problem}")
        out = Path(out)
        self.sinks = [SINKS[n](out, name, flat(config), stage, purge_step) for n in names]

    def log(self, metrics: dict, step: int | None = None, prefix: str = "") -> None:
        m = numbers({f"{prefix}{k}": v for k, v in metrics.items()})
        for s in self.sinks if m else []:
            s.log(m, step)

    def results(self, results: dict[str, dict], prefix: str, step: int | None = None) -> None:
        """Each entry's score, 95% CI bounds and n; without a step they are the run's summary."""
        m = result_metrics(results, prefix)
        for s in self.sinks if m else []:
            s.log(m, step) if step is not None else s.summary(m)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
        self.sinks = []

    def __enter__(self) -> "Trackers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
