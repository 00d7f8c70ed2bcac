"""ToxiGen's own code, beside its spec (`format: toxigen.py`), as lm-eval's tasks/<name>/utils.py: its
prompt files (`read`: one prompt per line, `prompts/{hate,neutral}_<group>_1k.txt`) and its hub
dataset (`load_hub`: toxigen/toxigen-data, the distinct hateful prompts grouped by target group;
`labelled_hub_prompts`: hateful and benign prompts, for the classifier audit of hrlaif/evalsets/toxicity.py)."""
from __future__ import annotations

from pathlib import Path

from hrlaif.evalsets.benchdata import BenchData
from hrlaif.evalsets.hub import load_split
from hrlaif.evalsets.loaders import read_text


def prompt(text: str) -> str:
    return text.replace("\\n", "\n")  # the official files join sentences with a literal backslash-n


def read(path: Path, group: str, sp) -> list[dict]:
    return [{"prompt": prompt(line), "doc_id": f"{group}/{i}", "group": group}
            for i, line in enumerate(read_text(path).splitlines()) if line.strip()]


def load_hub(sp) -> BenchData:
    groups: dict[str, list[dict]] = {}
    seen = set()
    for r in load_split(sp.hub.path, sp.hub.name, sp.hub.eval_split):
        if r.get("prompt_label") != 1 or r["prompt"] in seen:
            continue
        seen.add(r["prompt"])
        g = groups.setdefault(r["group"], [])
        g.append({"prompt": prompt(r["prompt"]), "doc_id": f"{r['group']}/{len(g)}", "group": r["group"]})
    return BenchData(sp.name, f"hub:{sp.hub.path}", groups)


def labelled_hub_prompts(sp) -> tuple[list[dict], list[dict]]:  # pragma: no cover - needs network
    """(hateful, benign) distinct prompts of the hub dataset, by its prompt_label."""
    seen: set[str] = set()
    hate, benign = [], []
    for r in load_split(sp.hub.path, sp.hub.name, sp.hub.eval_split):
        if r["prompt"] not in seen:
            seen.add(r["prompt"])
            (hate if r.get("prompt_label") == 1 else benign).append({"prompt": prompt(r["prompt"])})
    return hate, benign
