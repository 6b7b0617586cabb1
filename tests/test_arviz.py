"""ArviZ export: small real NUTS, SMC and λ̂ results become InferenceData with the right dims,
coordinates and values, and ArviZ's diagnostics on them agree with tmsjax's own."""

import subprocess
import sys
import textwrap
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

with warnings.catch_warnings():
    # ArviZ 0.2x announces its coming 1.0 refactor on import (a FutureWarning, once a day); it is
    # about ArviZ, not this code, and pytest's filterwarnings = error would fail the import.
    warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
    az = pytest.importorskip("arviz")

from tmsjax import arviz as tmsaz  # noqa: E402
from tmsjax.llc import LLCGrid, LLCSettings, estimate_llc, llc_along_training  # noqa: E402
from tmsjax.sampling import diagnostics  # noqa: E402
from tmsjax.sampling.nuts import make_nuts_sweep  # noqa: E402
from tmsjax.sampling.smc import make_smc_sweep  # noqa: E402
from tmsjax.sampling.tempering import geometric_ladder, make_tempering_sweep  # noqa: E402

SIZES = [100, 400]  # the targets: Gaussian posteriors of width 1/sqrt(n)
NUM_CHAINS = 4
NUM_SAMPLES = 200
# ArviZ computes in float64 with NumPy, tmsjax's diagnostics in float32 with JAX: the same R̂
# formula agrees to float32 rounding. The ESS is the same estimator (Geyer's initial monotone
# sequence), but the two codes cut the sequence one pair apart in some cases: on 200 AR(1) series
# of 4 × 200 draws they agreed to 1e-15 in most and differed by up to 0.8% (1.5% seen here).
RTOL_RHAT = 1e-5
RTOL_ESS = 0.05


class Position(NamedTuple):
    loc: jnp.ndarray  # (2,)
    scale: jnp.ndarray  # ()


def gaussian_logdensity(position, data):
    mean, std = data
    flat = jnp.concatenate([position.loc, position.scale[None]])
    return -0.5 * jnp.sum(((flat - mean) / std) ** 2)


@pytest.fixture(scope="module")
def sweep_result():
    num_grid = len(SIZES) * NUM_CHAINS
    std = jnp.repeat(1.0 / jnp.sqrt(jnp.asarray(SIZES, jnp.float32)), NUM_CHAINS)
    data = (jnp.zeros((num_grid, 3)), jnp.broadcast_to(std[:, None], (num_grid, 3)))
    sweep = make_nuts_sweep(gaussian_logdensity, num_warmup=100, num_samples=NUM_SAMPLES)
    start = Position(0.1 * jnp.ones((num_grid, 2)), 0.1 * jnp.ones(num_grid))
    return jax.device_get(sweep(jax.random.split(jax.random.key(0), num_grid), start, data))


def test_sweep_posterior_has_arviz_dims_and_the_draws(sweep_result):
    idata = tmsaz.sweep_to_inference_data(sweep_result, grid={"num_data": SIZES})
    loc = idata.posterior["loc"]
    assert loc.dims == ("chain", "draw", "num_data", "loc_dim_0")
    assert loc.shape == (NUM_CHAINS, NUM_SAMPLES, len(SIZES), 2)
    assert idata.posterior["scale"].dims == ("chain", "draw", "num_data")
    assert list(idata.posterior.num_data.values) == SIZES
    assert idata.posterior.attrs["inference_library"] == "tmsjax"
    # Grid element t·chains + j is chain j of target t.
    source = np.asarray(sweep_result.positions.loc).reshape(len(SIZES), NUM_CHAINS, NUM_SAMPLES, 2)
    for t, n in enumerate(SIZES):
        np.testing.assert_array_equal(idata.posterior["loc"].sel(num_data=n).values, source[t])
    # One target's InferenceData is a selection away.
    single = idata.sel(num_data=400)
    assert single.posterior["loc"].dims == ("chain", "draw", "loc_dim_0")


def test_sweep_sample_stats_use_arviz_names(sweep_result):
    idata = tmsaz.to_inference_data(sweep_result, grid={"num_data": SIZES})
    stats = idata.sample_stats
    assert set(stats.data_vars) == {
        "acceptance_rate",
        "diverging",
        "tree_depth",
        "n_steps",
        "lp",
        "energy",
        "step_size",
    }
    assert stats["diverging"].dtype == bool
    assert stats["lp"].dims == ("chain", "draw", "num_data")
    info = sweep_result.info

    def per_target(leaf):
        return np.moveaxis(np.asarray(leaf).reshape(len(SIZES), NUM_CHAINS, -1), 0, -1)

    np.testing.assert_array_equal(stats["lp"].values, per_target(info.logdensity))
    np.testing.assert_array_equal(stats["n_steps"].values, per_target(info.num_integration_steps))
    np.testing.assert_array_equal(stats["diverging"].values, per_target(info.is_divergent))
    step = np.asarray(sweep_result.step_size).reshape(len(SIZES), NUM_CHAINS).T
    np.testing.assert_array_equal(stats["step_size"].values[:, 7], step)
    # The Hamiltonian is the potential −log p plus a kinetic energy that is never negative.
    assert np.all(stats["energy"].values + stats["lp"].values >= -1e-4)
    assert np.all(np.isfinite(az.bfmi(stats["energy"].values[..., 0])))


def test_arviz_ess_and_rhat_agree_with_tmsjax(sweep_result):
    idata = tmsaz.sweep_to_inference_data(sweep_result, grid={"num_data": SIZES})
    # tmsjax's R̂ is Gelman-Rubin without splitting or ranks and its ESS Geyer's monotone sequence
    # on the raw chains: ArviZ's method="identity" of both.
    rhat = az.rhat(idata, method="identity")
    ess = az.ess(idata, method="identity")
    for n in SIZES:
        draws = idata.posterior["loc"].sel(num_data=n).values  # (chain, draw, 2)
        np.testing.assert_allclose(
            rhat["loc"].sel(num_data=n).values, diagnostics.rhat(draws), rtol=RTOL_RHAT
        )
        np.testing.assert_allclose(
            ess["loc"].sel(num_data=n).values,
            diagnostics.effective_sample_size(draws),
            rtol=RTOL_ESS,
        )
    # ArviZ's default (rank-normalised split R̂) sees converged chains on a Gaussian, and the
    # summary has a row per target and component.
    assert float(az.rhat(idata)["loc"].max()) < 1.05
    summary = az.summary(idata, var_names=["loc", "scale"])
    assert len(summary) == len(SIZES) * 3
    # The posterior sd is 1/sqrt(n): within 20% on ≥ 100 effective draws (sd error ~ 1/sqrt(2·ESS)).
    sd = summary.loc[[f"scale[{n}]" for n in SIZES], "sd"].to_numpy()
    np.testing.assert_allclose(sd, 1 / np.sqrt(SIZES), rtol=0.2)


def test_sweep_without_grid_is_one_target(sweep_result):
    idata = tmsaz.sweep_to_inference_data(sweep_result)
    assert idata.posterior["loc"].shape == (len(SIZES) * NUM_CHAINS, NUM_SAMPLES, 2)
    with pytest.raises(ValueError, match="not a multiple"):
        tmsaz.sweep_to_inference_data(sweep_result, grid={"num_data": [1, 2, 3]})
    with pytest.raises(ValueError, match="reserves"):
        tmsaz.sweep_to_inference_data(sweep_result, grid={"chain": SIZES})


def test_smc_replicates_are_chains():
    replicates, particles = 3, 64

    def logprior(w):
        return -0.5 * jnp.sum(w**2)

    def loglikelihood(w, data):
        return -0.5 * data * jnp.sum((w - 1.0) ** 2)

    sweep = make_smc_sweep(logprior, loglikelihood, num_mcmc_steps=2, num_integration_steps=4)
    num_grid = len(SIZES) * replicates
    data = jnp.repeat(jnp.asarray(SIZES, jnp.float32), replicates)
    start = jax.random.normal(jax.random.key(1), (num_grid, particles, 2))
    result = jax.device_get(sweep(jax.random.split(jax.random.key(2), num_grid), start, data))
    idata = tmsaz.to_inference_data(result, grid={"num_data": SIZES})
    position = idata.posterior["position"]
    assert position.dims == ("chain", "draw", "num_data", "position_dim_0")
    source = np.asarray(result.particles).reshape(len(SIZES), replicates, particles, 2)
    np.testing.assert_array_equal(position.values, np.moveaxis(source, 0, 2))
    stats = idata.sample_stats
    assert stats["log_marginal_likelihood"].dims == ("chain", "num_data")
    assert stats["beta"].dims == ("chain", "num_data", "stage")
    evidence = np.asarray(result.log_evidence).reshape(len(SIZES), replicates).T
    np.testing.assert_array_equal(stats["log_marginal_likelihood"].values, evidence)
    stages = stats["num_stages"].values
    beta = stats["beta"].values
    assert np.all(np.take_along_axis(beta, stages[..., None] - 1, axis=-1) == 1.0)
    # R̂ across the replicate runs, one per target and coordinate.
    assert az.rhat(idata)["position"].shape == (len(SIZES), 2)


def quadratic_loss(w, data):
    return jnp.sum(w**2)


SETTINGS = LLCSettings(nbeta=100.0, num_chains=4, num_steps=400, num_burnin=100)


@pytest.fixture(scope="module")
def llc_result():
    return jax.device_get(
        estimate_llc(jax.random.key(3), quadratic_loss, jnp.zeros(3), None, SETTINGS)
    )


def test_llc_posterior_mean_is_the_estimate(llc_result):
    idata = tmsaz.llc_to_inference_data(llc_result)
    assert idata.posterior["llc"].dims == ("chain", "draw")
    np.testing.assert_array_equal(idata.posterior["loss"].values, llc_result.draw_losses)
    np.testing.assert_allclose(
        idata.posterior["llc"].mean("draw").values, llc_result.llc_per_chain, rtol=1e-5
    )
    summary = az.summary(idata, var_names=["llc"])
    np.testing.assert_allclose(summary.loc["llc", "mean"], float(llc_result.llc), atol=1e-3)
    assert set(idata.sample_stats.data_vars) == set(llc_result.diagnostics._fields)
    assert idata.sample_stats["escaped"].dims == ("chain",)
    assert float(idata.constant_data["nbeta"]) == 100.0
    draws = np.asarray(llc_result.draw_losses)
    np.testing.assert_allclose(
        float(az.ess(idata, method="identity")["loss"]),
        diagnostics.effective_sample_size(draws),
        rtol=RTOL_ESS,
    )
    np.testing.assert_allclose(
        float(az.rhat(idata, method="identity")["loss"]), diagnostics.rhat(draws), rtol=RTOL_RHAT
    )


# ArviZ 0.23 hands matplotlib ≥ 3.11 a deprecated alias mapping inside plot_trace (ArviZ's code).
@pytest.mark.filterwarnings("ignore:Passing a dict or None as alias_mapping")
def test_llc_trace_shows_burn_in_and_plots(llc_result):
    idata = tmsaz.llc_to_inference_data(llc_result, losses="trace")
    assert idata.posterior["loss"].shape == (4, SETTINGS.num_steps)
    np.testing.assert_array_equal(idata.posterior["loss"].values, llc_result.loss_trace)
    axes = az.plot_trace(idata, var_names=["llc"])
    assert axes.shape == (1, 2)
    with pytest.raises(ValueError, match="losses"):
        tmsaz.llc_to_inference_data(llc_result, losses="steps")


def test_llc_along_training_keeps_run_and_checkpoint_axes():
    settings = LLCSettings(nbeta=100.0, num_chains=2, num_steps=60, num_burnin=20)
    centers = 0.01 * jnp.arange(2 * 3 * 3, dtype=jnp.float32).reshape(2, 3, 3)
    result = jax.device_get(
        llc_along_training(jax.random.key(4), quadratic_loss, centers, None, settings)
    )
    grid = {"run": range(2), "checkpoint": [0, 50, 100]}
    idata = tmsaz.llc_to_inference_data(result, grid=grid)
    llc = idata.posterior["llc"]
    assert llc.dims == ("chain", "draw", "run", "checkpoint")
    assert list(idata.posterior.checkpoint.values) == [0, 50, 100]
    np.testing.assert_allclose(
        llc.mean("draw").sel(run=1, checkpoint=50).values, result.llc_per_chain[1, 1], rtol=1e-5
    )
    assert idata.sample_stats["drifting"].dims == ("chain", "run", "checkpoint")
    assert idata.constant_data["init_loss"].dims == ("run", "checkpoint")
    assert az.rhat(idata)["llc"].shape == (2, 3)
    with pytest.raises(ValueError, match="leading axes"):
        tmsaz.llc_to_inference_data(result, grid={"run": range(2)})
    # An LLCGrid brings its own coordinates (here the same cells relabelled as a 1 × 2 × 3 grid).
    cells = LLCGrid(
        np.array([1e-3]),
        np.array([1.0, 10.0]),
        np.array([10.0, 30.0, 100.0]),
        jax.tree.map(lambda x: np.asarray(x)[None], result),
    )
    by_type = tmsaz.to_inference_data(cells)
    assert by_type.posterior["llc"].dims == ("chain", "draw", "step_size", "localization", "nbeta")
    np.testing.assert_array_equal(
        by_type.posterior["loss"].sel(localization=10.0, nbeta=30.0).values[..., 0],
        result.draw_losses[1, 1],
    )
    assert set(by_type.constant_data.data_vars) == {"init_loss"}  # nβ is a coordinate here
    with pytest.raises(ValueError, match="exported variable"):
        tmsaz.llc_to_inference_data(result, grid={"loss": range(2), "checkpoint": range(3)})


def test_tmsjax_imports_without_arviz_and_the_export_names_the_extra():
    # A fresh interpreter where `import arviz` fails (None in sys.modules blocks an import).
    code = textwrap.dedent(
        """
        import sys
        sys.modules["arviz"] = None
        import tmsjax, tmsjax.llc, tmsjax.sampling.nuts, tmsjax.sampling.smc
        assert "tmsjax.arviz" not in sys.modules
        try:
            import tmsjax.arviz
        except ImportError as error:
            print(error)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pip install tmsjax[arviz]" in out.stdout


def test_tempering_draws_per_target_and_ladder_stats():
    def logprior(w):
        return -0.5 * jnp.sum(w**2)

    def loglikelihood(w, mean):
        return -0.5 * jnp.sum((w - mean) ** 2)

    sweep = make_tempering_sweep(logprior, loglikelihood, num_warmup=20, num_samples=30)
    means = jnp.repeat(jnp.array([[0.0, 0.0], [1.0, -1.0]]), 3, axis=0)  # 2 targets × 3 chains
    betas = jnp.broadcast_to(geometric_ladder(0.3, 3), (6, 3))
    start = jax.random.normal(jax.random.key(0), (6, 3, 2))
    result = sweep(jax.random.split(jax.random.key(1), 6), start, means, betas)
    idata = tmsaz.to_inference_data(result, grid={"target": [0, 1]})
    assert idata.posterior["position"].dims[:3] == ("chain", "draw", "target")
    assert idata.posterior["position"].shape[:3] == (3, 30, 2)
    # chain j of target t is grid element t·3 + j (target-major, as the sweeps lay it out)
    np.testing.assert_array_equal(
        idata.posterior["position"].sel(target=1).values[2], np.asarray(result.positions[5])
    )
    np.testing.assert_array_equal(
        idata.sample_stats["loglikelihood"].sel(target=0).values[1],
        np.asarray(result.loglikelihood[1]),
    )
    trips = idata.sample_stats["num_round_trips"].sel(target=1).values
    assert np.all(trips[:, 0, None] == trips)  # a chain constant, repeated over draws
    assert int(trips[0, 0]) == int(result.num_round_trips[3])
