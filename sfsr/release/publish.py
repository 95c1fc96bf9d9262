"""Publish a trained model folder as a pretrained model others start from (the committed cpu-demo).

    python -m sfsr.release.publish RUNS/NAME/model DEST --name sfsr-cpu-demo \\
        --trained-on "..." --licence "..." [--note "..."]
    python -m sfsr.release.evaluate_synth DEST --n 128 --card --grid DEST/grid.png   # held-out metrics
    python -m sfsr.release.evaluate_synth --run RUNS/NAME --card-of DEST              # over training

DEST gets config.json, the weights in half precision (loading casts them back to float32; half
the size in git) and sfsr_card.json: how the model was made, taken from the run_card.json that
jobs/train.py exported next to the weights (command, commit, seed, training time, training and
job settings, final training metrics), the loss history of the run's checkpoints, and the
sampling defaults Generator uses. A model fine-tuned from another (--init-from) lists every
stage, oldest first, with its command, commit and training time; train_minutes is their sum.
evaluate_synth --card adds the held-out metrics.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from sfsr.expressions.bank import BANK_FILE
from sfsr.generate import CARD_NAME, DEFAULT_SAMPLING, INITS
from sfsr.io import storage
from sfsr.model import checkpoint
from sfsr.model.diffsfsr import DiffSFSR


def save_half(model: torch.nn.Module, folder: Path) -> None:
    """save_pretrained with float16 weights (half the size; loading casts back to float32)."""
    copy.deepcopy(model).to(torch.float16).save_pretrained(folder)


def loss_history(run: Path) -> list[dict]:
    """The metrics every kept checkpoint of a jobs/train.py run recorded, in step order."""
    keep = ("step", "train_seconds", "samples_per_s", "loss", "loss_denoise", "loss_identity", "loss_expression", "lr")
    return [{k: r[k] for k in keep if k in r} for r in checkpoint.checkpoint_metrics(run)]


def stages(model_dir: Path) -> list[dict]:
    """The run cards of a model and of the models it was fine-tuned from (job.init_from, when
    that folder is local and has one), oldest first. A published folder (a card, no run card,
    such as the committed cpu-demo) contributes the stages its card lists."""
    chain, seen, here = [], set(), model_dir
    while here is not None and (here / checkpoint.RUN_CARD).is_file() and here.resolve() not in seen:
        seen.add(here.resolve())
        card = json.loads((here / checkpoint.RUN_CARD).read_text())
        chain.append({"model": str(here), **card})
        parent = (card.get("job") or {}).get("init_from")
        here = Path(parent) if parent and not str(parent).startswith("s3://") else None
    if here is not None and not (here / checkpoint.RUN_CARD).is_file() and (here / CARD_NAME).is_file():
        published = json.loads((here / CARD_NAME).read_text()).get("stages", [])
        chain += [
            {
                "model": st.get("model", str(here)),
                "provenance": st.get("provenance", {}),
                "job": st.get("job", {}),
                "train": st.get("train_config", {}),
                "metrics": st.get("final_metrics", {}),
                "loss_history": st.get("loss_history", []),
            }
            for st in published[::-1]
        ]
    return chain[::-1]


def publish(
    model_dir: str | Path,
    dest: str | Path,
    *,
    name: str,
    trained_on: str,
    licence: str,
    note: str = "",
    sampling: dict | None = None,
    expression_bank: str | None = None,
) -> dict:
    """Write DEST (weights in float16, config, card, and the expression bank); returns the card.

    The bank (word means and exemplar faces, jobs/ingest.py) is `expression_bank`, else the one
    the ingest wrote next to the last stage's training table, when there is one."""
    src, dest = Path(model_dir), Path(dest)
    if not (src / checkpoint.RUN_CARD).is_file():
        raise FileNotFoundError(
            f"{src}: no run_card.json; publish the model folder jobs/train.py exported (RUNS/NAME/model)"
        )
    chain = stages(src)
    run_card = chain[-1]
    seconds = [c.get("metrics", {}).get("train_seconds") for c in chain]
    model = DiffSFSR.from_pretrained(str(src), use_safetensors=True)
    model.register_to_config(trained_on=trained_on)  # config and card say the same (Generator.info)
    dest.mkdir(parents=True, exist_ok=True)
    save_half(model, dest)
    prov, metrics, job = run_card.get("provenance", {}), run_card.get("metrics", {}), run_card.get("job", {})
    card = {
        "name": name,
        "trained_on": trained_on,
        "licence": licence,
        # a fine-tuned model lists every stage; the commands run in this order
        "command": " && ".join(c.get("provenance", {}).get("command", "?") for c in chain),
        "git_commit": prov.get("git_commit", "")
        if len(chain) == 1
        else "; ".join(f"stage {i}: {c.get('provenance', {}).get('git_commit', '?')}" for i, c in enumerate(chain, 1)),
        "started_utc": prov.get("started_utc", ""),
        "seed": job.get("seed"),
        "steps": sum(c.get("metrics", {}).get("step") or 0 for c in chain),  # all stages
        "train_minutes": round(sum(seconds) / 60, 2) if None not in seconds else None,  # all stages
        "parameters": sum(p.numel() for p in model.parameters()),
        "sampling": {**DEFAULT_SAMPLING, **(sampling or {})},
        "training": {"job": job, "train_config": run_card.get("train", {}), "final_metrics": metrics},
        "stages": [
            {
                "model": c["model"],
                "provenance": c.get("provenance", {}),
                "job": c.get("job", {}),
                "train_config": c.get("train", {}),
                "final_metrics": c.get("metrics", {}),
                "loss_history": c["loss_history"] if "loss_history" in c else loss_history(Path(c["model"]).parent),
            }
            for c in chain
        ],
        "metrics": {},
    }
    if note:
        card["training_note"] = note
    bank = expression_bank or _bank_beside(job.get("table") or "")
    if bank:
        (dest / BANK_FILE).write_bytes(storage.read_bytes(bank))
        card["expression_bank"] = {"from": bank, "file": BANK_FILE}
    (dest / CARD_NAME).write_text(json.dumps(card, indent=1))
    return card


def _bank_beside(table: str) -> str | None:
    """TABLE_ROOT/expression_bank.parquet for a table at TABLE_ROOT/faces, if it exists."""
    if not table:
        return None
    candidate = storage.join(table.rstrip("/").rsplit("/", 1)[0], BANK_FILE)
    return candidate if storage.exists(candidate) else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("model", help="the model folder jobs/train.py exported (RUNS/NAME/model, with run_card.json)")
    p.add_argument("dest", help="folder to write, e.g. sfsr/model/pretrained/cpu-demo")
    p.add_argument("--name", required=True, help="model name shown by /v1/info")
    p.add_argument("--trained-on", required=True, help="what data it was trained on")
    p.add_argument("--licence", required=True, help="licence of the weights")
    p.add_argument("--note", default="", help="anything the card should say about how it was trained")
    p.add_argument(
        "--expression-bank",
        default=None,
        help=f"{BANK_FILE} to ship with the model (default: the one beside the training table, if any)",
    )
    p.add_argument("--steps", type=int, default=20, help="default sampling steps (evaluate_synth measures with 20)")
    p.add_argument("--guidance-identity", type=float, default=None, help="default identity guidance")
    p.add_argument("--guidance-expression", type=float, default=None, help="default expression guidance")
    p.add_argument(
        "--init", default=None, choices=list(INITS), help="what sampling starts from by default (noise, or inversion)"
    )
    a = p.parse_args(argv)
    sampling = {"steps": a.steps}
    for key in ("guidance_identity", "guidance_expression", "init"):
        if getattr(a, key) is not None:
            sampling[key] = getattr(a, key)
    card = publish(
        a.model,
        a.dest,
        name=a.name,
        trained_on=a.trained_on,
        licence=a.licence,
        note=a.note,
        sampling=sampling,
        expression_bank=a.expression_bank,
    )
    print(f"{a.dest}: {card['steps']} steps, {card['train_minutes']} min, commit {card['git_commit'] or '?'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
