import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

from tmsjax.transitions.changepoints import detect_changepoints
from tmsjax.transitions.curvature import curvature_probes
from tmsjax.transitions.probes import compute_probes

x, y = load_digits(return_X_y=True)  # 1797 8×8 images, bundled with scikit-learn: no download
data = (jnp.asarray(x / 16, jnp.float32), jnp.asarray(y))  # your data
model = eqx.nn.MLP(64, 10, 32, 1, key=jax.random.key(0))  # your model: 64 → 32 → 10, ReLU
static = eqx.partition(model, eqx.is_inexact_array)[1]  # the non-array part never changes


def loss_fn(params, data):  # the curvature probes differentiate a loss of the arrays alone
    x, y = data
    logits = jax.vmap(eqx.combine(params, static))(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


optimizer = optax.adam(1e-3)
params = eqx.filter(model, eqx.is_inexact_array)
opt_state = optimizer.init(params)


@jax.jit
def train_step(params, opt_state):
    updates, opt_state = optimizer.update(jax.grad(loss_fn)(params, data), opt_state)
    return optax.apply_updates(params, updates), opt_state


@jax.jit
def probe(params, key):  # weight-only probes need no data; curvature: ~40 gradients' cost
    weights, hessian = compute_probes(params), curvature_probes(key, loss_fn, params, data)
    return jnp.stack([weights.weight_norm, weights.log_spectral_product, *hessian])


probe_steps = np.unique(np.geomspace(10, 2000, 40).astype(int))  # log-spaced, as transitions are
rows = []
for step in range(1, 2001):
    params, opt_state = train_step(params, opt_state)
    if step in probe_steps:
        rows.append(probe(params, jax.random.key(step)))
names = ("weight norm", "log Πσ₁", "Hessian trace", "top eigenvalue", "free energy (σ = 0.01)")
series = np.log(np.abs(np.stack(rows)))  # every probe on a log scale
found = detect_changepoints(probe_steps, series)  # several probes at once: multivariate PELT
print(*(f"{n}: {a:.3g} → {b:.3g}" for n, a, b in zip(names, rows[0], rows[-1])), sep="\n")
print("transitions at steps", np.round(found.steps).astype(int).tolist())
