import pytest
import torch

from normcore.nets import SAINT, FiLMMLP, build_backbone
from normcore.nets import saint as saint_module
from normcore.nets.saint import FeatureAttention, reference_attention


def make(name):
    torch.manual_seed(0)
    net = build_backbone(name, d_in=5, d_cond=3, **({"width": 32, "depth": 2, "emb_dim": 16} if name == "film-mlp"
                                                   else {"dim": 16, "depth": 2, "heads": 2, "emb_dim": 16}))
    for p in net.parameters():  # zero-initialised output layers would make every test trivially pass
        torch.nn.init.normal_(p, std=0.2)
    return net


def inputs(n=7):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g), torch.randint(0, 100, (n,), generator=g), torch.randn(n, 3, generator=g)


@pytest.mark.parametrize("name", ["film-mlp", "saint"])
def test_eval_mode_output_does_not_depend_on_batch_composition(name):
    net = make(name).eval()
    x, t, c = inputs()
    with torch.no_grad():
        full = net(x, t, c)
        for i in range(len(x)):
            torch.testing.assert_close(full[i:i + 1], net(x[i:i + 1], t[i:i + 1], c[i:i + 1]), rtol=1e-5, atol=1e-5)
        shuffled = net(x.flip(0), t.flip(0), c.flip(0))
    torch.testing.assert_close(shuffled.flip(0), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["film-mlp", "saint"])
def test_shared_condition_layout_matches_repeated_rows(name):
    """(n, m, d) inputs with one condition per n equal the same rows laid out flat."""
    net = make(name).eval()
    x, t, c = inputs(3)
    xs = torch.randn(3, 4, 5)
    with torch.no_grad():
        grouped = net(xs, t, c)
        flat = net(xs.reshape(12, 5), t.repeat_interleave(4), c.repeat_interleave(4, dim=0))
    assert grouped.shape == (3, 4, 5)
    torch.testing.assert_close(grouped.reshape(12, 5), flat, rtol=1e-5, atol=1e-5)


def test_per_idp_path_sees_only_its_own_idp_and_is_unchanged_by_blocking():
    net = make("film-mlp").eval()
    x, t, c = inputs()
    xs = torch.randn(7, 6, 5)
    with torch.no_grad():
        e = net.embed(t, c)
        base = net.marginal(xs, e)
        bumped = xs.clone()
        bumped[..., 2] += 1.0
        moved = net.marginal(bumped, e) - base
        net.marginal.block_elements = 1  # one condition per block
        blocked = net.marginal(xs, e)
    assert moved[..., 2].abs().min() > 0
    torch.testing.assert_close(moved[..., [0, 1, 3, 4]], torch.zeros(7, 6, 4))
    torch.testing.assert_close(blocked, base)


def test_per_idp_path_is_its_small_mlp_per_idp_with_and_without_autograd():
    """The path's width-major computation equals the per-IDP MLP it stands for, silu(silu((x_j v + E_j)(1 + gamma)
    + beta) W_h + b_h) w_o + b_o, for grouped (n, m, d) and flat (n, d) rows, and trains (gradients reach every
    parameter)."""
    torch.manual_seed(3)
    net = make("film-mlp")
    path = net.marginal
    torch.nn.init.normal_(path.out.weight)
    torch.nn.init.normal_(path.out.bias)
    x, t, c = inputs(4)
    e = net.embed(t, c).detach()
    gamma, beta = path.film(e).chunk(2, dim=-1)

    def reference(xs):
        g, b = (gamma, beta) if xs.dim() == 2 else (gamma[:, None], beta[:, None])
        h = (xs.unsqueeze(-1) * path.value + path.idp) * (1 + g.unsqueeze(-2)) + b.unsqueeze(-2)
        h = torch.nn.functional.silu(path.hidden(torch.nn.functional.silu(h)))
        return path.out(h).squeeze(-1)

    grouped = torch.randn(4, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(path(grouped, e), reference(grouped))
        torch.testing.assert_close(path(x, e), reference(x))
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):  # mixed precision (used on GPUs) also runs
        torch.testing.assert_close(path(grouped, e), reference(grouped).float(), atol=0.1, rtol=0.05)
    trained = path(x, e)
    torch.testing.assert_close(trained, reference(x))
    trained.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in path.parameters())


def test_saint_row_attention_couples_rows_only_when_asked():
    net = make("saint")
    x, t, c = inputs()
    with torch.no_grad():
        coupled = net(x, t, c, across_rows=True)
        alone = net(x[:1], t[:1], c[:1], across_rows=True)
        per_row = net(x, t, c, across_rows=False)
    assert not torch.allclose(coupled[:1], alone, atol=1e-4)
    torch.testing.assert_close(per_row[:1], net(x[:1], t[:1], c[:1], across_rows=False))
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, c), per_row)


@pytest.mark.parametrize("cls", [FiLMMLP, SAINT])
def test_backbone_learns_to_denoise(cls):
    """A few hundred steps on a fixed noise level lower the loss well below the untrained value."""
    torch.manual_seed(0)
    net = cls(d_in=3, d_cond=1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x0 = torch.randn(512, 3) * 0.1 + torch.tensor([1.0, -1.0, 0.5])
    t = torch.full((512,), 10)
    c = torch.zeros(512, 1)
    losses = []
    for _ in range(150):
        noise = torch.randn_like(x0)
        xt = 0.9 * x0 + 0.43 * noise
        loss = ((net(xt, t, c) - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_saint_feature_attention_equals_multihead_attention_and_the_definition():
    """The fused feature attention computes nn.MultiheadAttention's function with its parameter layout (saved
    models load), and both equal softmax(q k^T / sqrt(d)) v written out."""
    torch.manual_seed(0)
    fused = FeatureAttention(16, 4)
    for p in fused.parameters():
        torch.nn.init.normal_(p, std=0.3)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    mha.load_state_dict(fused.state_dict())  # strict: same names and shapes
    h = torch.randn(6, 9, 16)
    out = fused(h)  # with gradients: not MultiheadAttention's inference fast path
    torch.testing.assert_close(out, mha(h, h, h, need_weights=False)[0], rtol=1e-5, atol=1e-5)
    q, k, v = torch.nn.functional.linear(h, fused.in_proj_weight, fused.in_proj_bias).chunk(3, dim=-1)
    heads = lambda a: a.view(6, 9, 4, 4).transpose(1, 2)  # noqa: E731
    by_definition = reference_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(6, 9, 16)
    torch.testing.assert_close(out, fused.out_proj(by_definition), rtol=1e-5, atol=1e-5)


def test_saint_inference_in_cache_sized_blocks_equals_one_pass(monkeypatch):
    net = make("saint").eval()
    x, t, c = inputs(50)
    whole = net(x, t, c)  # gradients enabled: one pass over all rows
    monkeypatch.setattr(saint_module, "CPU_BLOCK_ELEMENTS", 1)  # blocks of 8 rows
    with torch.no_grad():
        blocked = net(x, t, c)
    torch.testing.assert_close(blocked, whole.detach(), rtol=1e-5, atol=1e-5)


def test_the_per_idp_path_widens_with_training_rows_up_to_its_cap():
    from normcore.nets.film_mlp import MARGINAL_WIDTH_ROWS, auto_marginal_width
    assert auto_marginal_width(10) == auto_marginal_width(10, 10**6) == 32  # few IDPs: full width already
    assert auto_marginal_width(200) == auto_marginal_width(200, MARGINAL_WIDTH_ROWS) == 13  # 32 sqrt(32/200)
    widths = [auto_marginal_width(200, n) for n in (0, 2 * MARGINAL_WIDTH_ROWS, 4 * MARGINAL_WIDTH_ROWS, 10**7)]
    assert widths == [13, 18, 26, 32]  # grows as sqrt(rows), capped
