"""Scores exported in PCNtoolkit's result layout, read back the way PCNtoolkit reads them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from normcore import make_model, make_synthetic
from normcore.cli.main import main
from normcore.tabular.pcntoolkit_export import PCN_CENTILES, STATISTICS, pcntoolkit_tables, write_pcntoolkit_results


@pytest.fixture(scope="module")
def scored():
    df, truth = make_synthetic(300, d=3, seed=2, n_sites=2)
    model = make_model("shash-baseline").fit(df, age="age", covariates=["sex", "site"], idps=truth.idp_names)
    scores = model.score(df)
    return model, df, scores, pcntoolkit_tables(model, df, scores, id_col="sub_id"), truth.idp_names


def test_the_tables_have_pcntoolkits_layout_and_values(scored):
    model, df, scores, tables, idps = scored
    z, centiles, statistics = tables["Z"], tables["centiles"], tables["statistics"]
    assert z.index.name == "observations" and list(z.columns) == ["subject_ids", *sorted(idps)]
    assert list(z.subject_ids) == list(df.sub_id.astype(str))
    np.testing.assert_allclose(z["idp_02"], scores["z:idp_02"])
    assert centiles.index.names == ["observations", "centile"] and len(centiles) == 5 * len(df)
    first = centiles.xs("0", level="observations")["idp_01"].to_numpy()
    assert (np.diff(first) > 0).all()  # centile curves ordered
    exact = [model.predict_quantiles(df.head(1), (q,))[0, 0, 0] for q in PCN_CENTILES]
    np.testing.assert_allclose(first, exact)  # in the IDP's own units at the subject's covariates
    assert list(statistics.index) == list(STATISTICS) and list(statistics.columns) == sorted(idps)
    # hand-computed: RMSE and Rho from the predictive mean, MACE as PCNtoolkit defines it
    mean, _ = model.predict_moments(df)
    y = df["idp_01"].to_numpy()
    assert statistics.loc["RMSE", "idp_01"] == pytest.approx(np.sqrt(np.mean((y - mean[:, 0]) ** 2)))
    assert statistics.loc["Rho", "idp_01"] == pytest.approx(np.corrcoef(y, mean[:, 0])[0, 1])
    q = np.stack([centiles.xs(str(c), level="centile")["idp_01"].to_numpy() for c in PCN_CENTILES])
    groups = df.sex.astype(str) + "|" + df.site.astype(str)
    mace = np.mean([np.abs(np.array(PCN_CENTILES) - (q[:, (groups == g).to_numpy()] >= y[(groups == g).to_numpy()])
                           .mean(axis=1)).mean() for g in groups.unique()])
    assert statistics.loc["MACE", "idp_01"] == pytest.approx(mace)
    assert 0 < statistics.loc["MACE", "idp_01"] < 0.1 and 0.9 < statistics.loc["ShapiroW", "idp_01"] <= 1


def test_pcntoolkit_reads_the_files_back(scored, tmp_path):
    pcn = pytest.importorskip("pcntoolkit", reason="PCNtoolkit not installed (requirements-baselines.txt)")
    model, df, scores, tables, idps = scored
    write_pcntoolkit_results(tables, tmp_path, "test")
    data = pcn.NormData.from_dataframe(name="test", dataframe=df.assign(sex=df.sex.astype(str)),
                                       covariates=["age"], batch_effects=["sex", "site"], response_vars=idps,
                                       subject_ids="sub_id")
    data.load_results(str(tmp_path))
    np.testing.assert_allclose(data.Z.sel(response_vars=sorted(idps)).values.astype(float),
                               tables["Z"][sorted(idps)].to_numpy())
    assert [float(c) for c in data.centiles.centile.values] == list(PCN_CENTILES)
    np.testing.assert_allclose(data.centiles.sel(centile=0.5).values,
                               tables["centiles"].xs("0.5", level="centile")[sorted(idps)].to_numpy())
    np.testing.assert_allclose(data.statistics.sel(statistic="MACE").values, tables["statistics"].loc["MACE"])


def test_score_format_pcntoolkit(scored, tmp_path, capsys):
    model, df, _, _, _ = scored
    model.save(tmp_path / "m")
    df.to_csv(tmp_path / "d.csv", index=False)
    rc = main(["score", str(tmp_path / "m"), str(tmp_path / "d.csv"), "--format", "pcntoolkit", "--id-col", "sub_id",
               "--out", str(tmp_path / "pcn"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "pcn").iterdir()) == ["Z_test.csv", "centiles_test.csv",
                                                                   "statistics_test.csv"]
    z = pd.read_csv(tmp_path / "pcn" / "Z_test.csv")
    assert list(z.columns[:2]) == ["observations", "subject_ids"] and len(z) == len(df)
    rc = main(["score", str(tmp_path / "m"), str(tmp_path / "d.csv"), "--format", "pcntoolkit",
               "--out", str(tmp_path / "d.csv")])
    assert rc == 2 and "names a folder" in capsys.readouterr().err


def test_the_zip_download_holds_the_same_files(scored, tmp_path):
    import io
    import zipfile

    from normcore.tabular.pcntoolkit_export import pcntoolkit_zip_bytes

    *_, tables, _ = scored
    written = write_pcntoolkit_results(tables, tmp_path, "site1")
    with zipfile.ZipFile(io.BytesIO(pcntoolkit_zip_bytes(tables, "site1"))) as archive:
        assert sorted(archive.namelist()) == sorted(p.name for p in written)
        for path in written:
            assert archive.read(path.name).decode() == path.read_text()
