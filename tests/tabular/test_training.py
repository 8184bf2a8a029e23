"""Early stopping whose patience scales with the run and keeps the untrained denoiser when training only hurts."""

import numpy as np
import torch

from normcore._utils.progress import Progress
from normcore.diffusion import NoiseSchedule, wrap_denoiser
from normcore.nets import build_backbone
from normcore.tabular.training import (
    TrainConfig,
    ValidationRecord,
    evaluation_interval,
    patience_steps,
    planned_epochs,
    train_denoiser,
)


def test_interval_and_patience_scale_with_the_run():
    cfg = TrainConfig()
    assert [evaluation_interval(cfg, n) for n in (100, 6000, 100_000)] == [25, 150, 300]
    assert evaluation_interval(TrainConfig(eval_every_steps=70), 6000) == 70  # explicit interval kept
    assert patience_steps(cfg, 150, 600) == 1200  # early best: patience evaluations
    assert patience_steps(cfg, 150, 4000) == 2000  # late best: half its own step


def test_the_auto_budget_is_its_steps_or_its_passes_over_the_rows_whichever_is_more():
    cfg = TrainConfig()  # 6000 steps or 160 epochs
    assert planned_epochs(cfg, 3) == 2000  # a small cohort: 6000 steps of 3 per epoch
    assert planned_epochs(cfg, 70) == 160  # 18,000 training rows at batch 256: 11,200 steps, not 6000
    assert planned_epochs(cfg, 37) == 163  # just below the turn: 6000 steps still need more than 160 epochs
    assert planned_epochs(TrainConfig(epochs=5), 70) == 5  # an explicit epoch count is kept
    assert planned_epochs(TrainConfig(auto_steps=100, auto_epochs=1), 10) == 10


def test_a_run_that_stops_improving_stops_after_its_patience():
    g = np.random.default_rng(0)
    x = g.normal(size=(600, 3)).astype(np.float32)
    c = g.normal(size=(600, 2)).astype(np.float32)
    torch.manual_seed(0)
    net = build_backbone("film-mlp", 3, 2, width=16, depth=1, emb_dim=8)
    cfg = TrainConfig(epochs=400, batch_size=64, lr=1e-12, warmup_steps=1, patience=3)  # nothing can be learnt
    _, history = train_denoiser(net, x[:500], c[:500], x[500:], c[500:], NoiseSchedule("cosine", 100), cfg,
                                torch.device("cpu"), Progress())
    every = history["eval_every_steps"]
    assert history["planned_steps"] == 400 * 7 and every == 70
    # no evaluation beats the untrained denoiser (step 0) by min_improvement: the clock runs from step 0
    assert history["stopped_early"] and history["best_step"] == 0
    assert history["stop_step"] == history["patience_steps"] == 3 * every
    assert abs(history["initial_val_loss"] - history["val_loss"][0]) < cfg.min_improvement


def test_training_that_only_harms_validation_keeps_the_untrained_denoiser():
    g = np.random.default_rng(0)
    x_val = g.normal(size=(200, 3)).astype(np.float32)  # exactly the Gaussian residual's N(0, I) prior
    x_train = (g.normal(size=(600, 3)) + 2.0).astype(np.float32)  # a shift the network learns, validation lacks
    c = np.zeros((800, 1), np.float32)
    torch.manual_seed(0)
    schedule = NoiseSchedule("cosine", 100)
    denoiser = wrap_denoiser(build_backbone("film-mlp", 3, 1, width=16, depth=1, emb_dim=8), schedule,
                             "gaussian-residual")
    initial = {k: v.clone() for k, v in denoiser.state_dict().items()}
    cfg = TrainConfig(epochs=60, batch_size=64, warmup_steps=1, patience=3)
    state, history = train_denoiser(denoiser, x_train, c[:600], x_val, c[600:], schedule, cfg, torch.device("cpu"),
                                    Progress())
    assert min(history["val_loss"]) > history["initial_val_loss"] + cfg.min_improvement  # training only hurt it
    assert history["kept_step"] == history["best_step"] == 0
    assert all(torch.equal(state[k], initial[k]) for k in initial)  # the untrained weights, returned as they were


def test_the_latest_state_validation_cannot_tell_from_the_best_is_kept():
    plateau = ValidationRecord(min_improvement=1e-3)
    kept = [plateau.observe(step, v) for step, v in ((100, 0.50), (200, 0.40), (300, 0.3995), (400, 0.4004))]
    assert kept == [True, True, True, True]  # 0.3995 and 0.4004 are within 1e-3 of the lowest (0.3995)
    assert plateau.best_step == 200 and plateau.kept_step == 400  # the clock runs from the last real improvement
    assert plateau.lowest_val == 0.3995

    rising = ValidationRecord(min_improvement=1e-3)
    kept = [rising.observe(step, v) for step, v in ((100, 0.50), (200, 0.40), (300, 0.43), (400, 0.45))]
    assert kept == [True, True, False, False]  # over-fitting: the state before the rise stays
    assert rising.best_step == rising.kept_step == 200 and rising.kept_val == 0.40


def test_with_a_closed_form_step_0_the_kept_trained_state_is_returned_for_the_caller_to_weigh():
    """The same training as above with the untrained denoiser handed in as the closed-form step 0: the validation loss
    still prefers step 0, but the state returned is the best trained one, for the caller to weigh against its own."""
    g = np.random.default_rng(0)
    x_val = g.normal(size=(200, 3)).astype(np.float32)
    x_train = (g.normal(size=(600, 3)) + 2.0).astype(np.float32)
    c = np.zeros((800, 1), np.float32)
    torch.manual_seed(0)
    schedule = NoiseSchedule("cosine", 100)
    net = build_backbone("film-mlp", 3, 1, width=16, depth=1, emb_dim=8)
    denoiser = wrap_denoiser(net, schedule, "gaussian-residual")
    initial = {k: v.clone() for k, v in denoiser.state_dict().items()}
    closed_form = wrap_denoiser(net, schedule, "gaussian-residual")
    cfg = TrainConfig(epochs=60, batch_size=64, warmup_steps=1, patience=3)
    state, history = train_denoiser(denoiser, x_train, c[:600], x_val, c[600:], schedule, cfg, torch.device("cpu"),
                                    Progress(), untrained=closed_form)
    assert history["kept_step"] == 0  # the loss prefers step 0, as without it
    trained = history["trained_step"]
    assert trained in history["step"] and trained > 0
    assert history["trained_val_loss"] <= min(history["val_loss"]) + cfg.min_improvement  # within reach of the lowest
    assert any(not torch.equal(state[k], initial[k]) for k in initial)  # trained weights, not the initial ones


def test_masked_entries_are_never_a_target_of_the_loss():
    """The untrained Gaussian-residual denoiser predicts each coordinate from itself alone, so with the corrupt
    (imputed) entries masked out the validation loss is the same whatever they hold, and without the mask it is not;
    training on several completions with a mask runs and reports finite losses."""
    g = np.random.default_rng(1)
    x = g.normal(size=(400, 3)).astype(np.float32)
    observed = g.random((400, 3)) > 0.3
    corrupt = np.where(observed, x, 50.0).astype(np.float32)
    c = np.zeros((400, 1), np.float32)
    schedule = NoiseSchedule("cosine", 100)
    cfg = TrainConfig(epochs=1, batch_size=64, warmup_steps=1)

    def initial_loss(x_val: np.ndarray, mask: np.ndarray | None) -> float:
        torch.manual_seed(0)
        denoiser = wrap_denoiser(build_backbone("film-mlp", 3, 1, width=16, depth=1, emb_dim=8), schedule,
                                 "gaussian-residual")
        completions = np.stack([np.where(observed[:300], x[:300], g.normal(size=(300, 3)))] * 2).astype(np.float32)
        _, history = train_denoiser(denoiser, completions, c[:300], x_val, c[300:], schedule, cfg,
                                    torch.device("cpu"), Progress(), observed_train=observed[:300],
                                    observed_val=mask)
        assert np.isfinite(history["val_loss"]).all()
        return history["initial_val_loss"]

    clean = initial_loss(x[300:], observed[300:])
    assert initial_loss(corrupt[300:], observed[300:]) == clean
    assert initial_loss(corrupt[300:], None) > 10 * clean
