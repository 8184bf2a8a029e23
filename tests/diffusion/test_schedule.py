import pytest
import torch

from normcore.diffusion import NoiseSchedule


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_schedule_decreases_from_one_to_near_zero(kind):
    s = NoiseSchedule(kind, 1000)
    a = s.alphas_cumprod
    assert torch.all(a[1:] < a[:-1])
    assert 0.99 < float(a[0]) <= 1.0 and float(a[-1]) < 1e-3
    if kind == "cosine":
        assert float(a[-1]) == pytest.approx(NoiseSchedule.min_abar, rel=1e-6)


def test_add_noise_has_the_forward_marginal():
    s = NoiseSchedule("cosine", 100)
    x0 = torch.full((200000, 1), 2.0)
    t = torch.full((200000,), 50)
    xt = s.add_noise(x0, torch.randn_like(x0), t)
    a = float(s.alphas_cumprod[50])
    assert abs(xt.mean() - a**0.5 * 2.0) < 0.01
    assert abs(xt.var() - (1 - a)) < 0.01


def test_posterior_matches_bayes_rule_for_one_step():
    s = NoiseSchedule("linear", 50)
    t = torch.tensor([30])
    x0, xt = torch.tensor([[0.7]]), torch.tensor([[-0.4]])
    mean, var = s.posterior(x0, xt, t)
    beta, a_prev = float(s.betas[30]), float(s.alphas_cumprod[29])
    # product of Gaussians: prior N(sqrt(a_prev) x0, 1-a_prev) times likelihood N(xt; sqrt(1-beta) x, beta)
    prec = 1 / (1 - a_prev) + (1 - beta) / beta
    expected_mean = (a_prev**0.5 * 0.7 / (1 - a_prev) + (1 - beta) ** 0.5 * -0.4 / beta) / prec
    assert float(var) == pytest.approx(1 / prec, rel=1e-5)
    assert float(mean) == pytest.approx(expected_mean, rel=1e-5)


def test_respaced_chain_descends_to_zero():
    ts = NoiseSchedule("cosine", 1000).respaced(40)
    assert ts[0] == 999 and ts[-1] == 0 and len(ts) == 40 and torch.all(ts[1:] < ts[:-1])


def test_log_snr_respacing_is_descending_and_covers_the_chain():
    s = NoiseSchedule("cosine", 1000)
    ts = s.respaced_log_snr(25)
    assert ts[0] == 999 and ts[-1] == 0 and torch.all(ts[1:] < ts[:-1]) and len(ts) >= 20
    lam = s.log_snr()[ts]
    gaps = lam[1:] - lam[:-1]
    even = (float(lam[-1]) - float(lam[0])) / 24
    assert abs(float(gaps.median()) - even) < 0.1 * even


def test_log_snr_respacing_from_a_start_takes_one_step_there_then_even_steps():
    s = NoiseSchedule("cosine", 1000)
    ts = s.respaced_log_snr(25, start=-3.0)
    lam = s.log_snr()[ts]
    assert ts[0] == 999 and ts[-1] == 0 and torch.all(ts[1:] < ts[:-1]) and len(ts) >= 20
    assert abs(float(lam[1]) + 3.0) < 0.05
    gaps = lam[2:] - lam[1:-1]
    even = (float(lam[-1]) + 3.0) / 23
    assert abs(float(gaps.median()) - even) < 0.1 * even
    assert torch.equal(s.respaced_log_snr(25, start=-10.0), s.respaced_log_snr(25))  # below the schedule's end
    with pytest.raises(ValueError, match="cleanest"):
        s.respaced_log_snr(25, start=6.0)
