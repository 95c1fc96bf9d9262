"""jobs/train.py's command line -> JobConfig -> TrainConfig, without Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobs.train import actor_cpus, crowded_warning, parse_args, train_config
from sfsr.model.presets import SYNTH_IDENTITY_ENCODER
from tests.fixtures.tables import face_table


def test_loss_and_schedule_flags_reach_the_train_config() -> None:
    job, smoke = parse_args(
        [
            "--table",
            "t/faces",
            "--steps",
            "300",
            "--lr",
            "3e-4",
            "--warmup-steps",
            "20",
            "--ema-decay",
            "0.995",
            "--identity-loss-weight",
            "0.3",
            "--expression-loss-weight",
            "0.1",
            "--aux-start-step",
            "50",
            "--batch-size",
            "16",
        ]
    )
    assert not smoke and job.name == "cpu-demo"
    cfg = train_config(job, SYNTH_IDENTITY_ENCODER)
    assert (cfg.total_steps, cfg.lr, cfg.warmup_steps, cfg.ema_decay) == (300, 3e-4, 20, 0.995)
    assert (cfg.identity_loss_weight, cfg.expression_loss_weight, cfg.aux_start_step, cfg.batch_size) == (
        0.3,
        0.1,
        50,
        16,
    )


def test_unset_flags_keep_the_train_config_defaults() -> None:
    job, _ = parse_args(["--table", "t/faces"])
    cfg = train_config(job, "insightface-arcface")
    assert cfg.lr == 2e-3 and cfg.warmup_steps == 200 and cfg.ema_decay == 0.999 and cfg.identity_loss_weight == 0


def test_photo_losses_need_arcface_for_identity_and_nothing_for_expression(tmp_path) -> None:
    photo = "builtin/dlib-resnet-v1@1"
    job, _ = parse_args(["--table", "photos/faces", "--identity-loss-weight", "0.3"])
    with pytest.raises(ValueError, match="photos/faces.*--identity-recogniser"):
        train_config(job, photo)
    job, _ = parse_args(
        ["--table", "photos/faces", "--identity-loss-weight", "0.3", "--identity-recogniser", "nope.pt"]
    )
    with pytest.raises(ValueError, match="nope.pt: no such file"):
        train_config(job, photo)
    weights = tmp_path / "r50.safetensors"
    weights.write_bytes(b"x")
    job, _ = parse_args(["--table", "t", "--identity-loss-weight", "0.3", "--identity-recogniser", str(weights)])
    assert train_config(job, photo).identity_loss_weight == 0.3
    job, _ = parse_args(["--table", "photos/faces", "--expression-loss-weight", "0.1"])
    assert train_config(job, photo).expression_loss_weight == 0.1  # the builtin FER network, offline


def test_arcface_on_a_synthetic_table_is_refused(tmp_path) -> None:
    job, _ = parse_args(["--table", "synth/faces", "--identity-loss-weight", "0.3", "--identity-recogniser", "r.pt"])
    with pytest.raises(ValueError, match="synthetic faces.*synth judges"):
        train_config(job, SYNTH_IDENTITY_ENCODER)


def test_a_missing_table_is_an_error_unless_smoke_test(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args([])
    assert "--table is required" in capsys.readouterr().err
    job, smoke = parse_args(["--smoke-test", "--preset", "tiny"])
    assert smoke and job.steps == 6 and job.name == "tiny-smoke"


def test_aux_swap_reaches_the_train_config_and_needs_the_identity_loss() -> None:
    job, _ = parse_args(["--table", "t/faces", "--identity-loss-weight", "0.3", "--aux-swap", "0.5"])
    assert train_config(job, SYNTH_IDENTITY_ENCODER).aux_swap == 0.5
    job, _ = parse_args(["--table", "t/faces", "--aux-swap", "0.5"])
    with pytest.raises(ValueError, match="--aux-swap 0.5.*--identity-loss-weight"):
        train_config(job, SYNTH_IDENTITY_ENCODER)
    job, _ = parse_args(["--table", "t/faces", "--identity-loss-weight", "0.3", "--aux-swap", "1.5"])
    with pytest.raises(ValueError, match="aux_swap=1.5"):
        train_config(job, SYNTH_IDENTITY_ENCODER)


def test_condition_means_come_from_the_training_split_only(tmp_path) -> None:
    from jobs.train import table_conditioning

    # person a: two training faces pointing along x, one held-out face along y; person b only held out
    faces = face_table(
        tmp_path / "faces",
        [("a", "train", [1.0, 0.0]), ("a", "train", [1.0, 0.0]), ("a", "test", [0.0, 1.0]), ("b", "test", [0.0, 1.0])],
    )
    job, _ = parse_args(["--table", faces])
    _, means = table_conditioning(job)
    assert means == {"a": [1.0, 0.0]}  # the whole-table mean would be (0.89, 0.45) and would know b
    job, _ = parse_args(["--table", faces, "--split", "all"])
    assert set(table_conditioning(job)[1]) == {"a", "b"}
    job, _ = parse_args(["--table", faces, "--split", "validation"])
    with pytest.raises(ValueError, match="no faces in split 'validation'"):
        table_conditioning(job)


def test_a_fine_tune_on_a_table_that_does_not_fit_its_model_is_refused_before_ray(tmp_path) -> None:
    # the fixture table holds synth-judge vectors of 2 values at 8 px; cpu-demo takes 64 at 32 px
    from jobs.train import run
    from tests.fixtures.tables import face_table

    faces = face_table(tmp_path / "faces", [("a", "train", [1.0, 0.0]), ("b", "train", [0.0, 1.0])])
    committed = Path(__file__).resolve().parents[2] / "sfsr" / "model" / "pretrained" / "cpu-demo"
    job, _ = parse_args(["--table", faces, "--init-from", str(committed), "--storage", str(tmp_path / "runs")])
    with pytest.raises(ValueError, match=r"does not fit the --init-from model.*2 values.*crops are 8 px"):
        run(job)
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


def test_a_run_that_would_starve_beside_another_training_run_is_warned_about() -> None:
    # the laptop platform: 2 CPUs, one run's worker holds 1, so a second run has no CPU for reads
    warning = crowded_warning(2, 1, {"02000000": 1.0})
    assert warning and "02000000" in warning and "1 of this cluster's 2 CPUs" in warning
    assert crowded_warning(2, 1, {}) is None  # alone: one CPU for the worker, one for the reads
    assert crowded_warning(4, 1, {"02000000": 1.0}) is None  # room for both
    assert crowded_warning(4, 2, {"02000000": 1.0, "03000000": 1.0})  # 2 held, 2 + 1 needed


def test_a_train_workers_cpus_are_read_from_its_placement_group_resources() -> None:
    # a Ray Train worker's required resources as `ray.util.state.list_actors(detail=True)` gave them
    pg = "b06b71405ba5cc982e61676d60f402000000"
    worker = {
        f"bundle_group_0_{pg}": 0.001,
        f"bundle_group_{pg}": 0.001,
        f"CPU_group_{pg}": 1.0,
        f"CPU_group_0_{pg}": 1.0,
    }
    assert actor_cpus(worker) == 1.0
    assert actor_cpus({"CPU": 2.0}) == 2.0
    assert actor_cpus({}) == 0.0


def test_the_drivers_import_leaves_diffusers_and_the_network_to_the_workers() -> None:
    # the driver only checks settings and copies the final model; each submission would otherwise
    # spend ~3 s importing diffusers before Ray Train starts a worker, which imports it anyway
    probe = "import sys, jobs.train; print(sorted(m for m in ('diffusers', 'sfsr.model.diffsfsr') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
