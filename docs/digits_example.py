import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from sklearn.datasets import load_digits

from tmsjax.llc import (
    MALA,
    LLCSettings,
    calibrate,
    grid_verdicts,
    llc_along_training,
    stack_checkpoints,
)

x, y = load_digits(return_X_y=True)  # 1797 8×8 images, bundled with scikit-learn: no download
data = (jnp.asarray(x / 16, jnp.float32), jnp.asarray(y))  # your data
model = eqx.nn.MLP(64, 10, 32, 1, key=jax.random.key(0))  # your model: 64 → 32 → 10, ReLU


def loss_fn(model, data):
    x, y = data
    return optax.softmax_cross_entropy_with_integer_labels(jax.vmap(model)(x), y).mean()


optimizer = optax.adam(1e-3)
opt_state = optimizer.init(eqx.filter(model, eqx.is_array))


@eqx.filter_jit
def train_step(model, opt_state):
    updates, opt_state = optimizer.update(eqx.filter_grad(loss_fn)(model, data), opt_state)
    return eqx.apply_updates(model, updates), opt_state


models = [model]  # the model after every step
for _ in range(2000):
    model, opt_state = train_step(model, opt_state)
    models.append(model)
settings = LLCSettings(num_steps=1000, num_burnin=300, sampler=MALA())  # MALA: exact at any ε
calibration = calibrate(jax.random.key(1), loss_fn, model, data, settings)  # at the last step
result = llc_along_training(  # at steps 200, 400, ..., 2000
    jax.random.key(2), loss_fn, stack_checkpoints(models[200::200]), data, calibration.settings
)
rows = zip(range(200, 2001, 200), result.llc[0], result.stderr[0], grid_verdicts(result)[0])
print(
    calibration.reason,
    *(f"step {s:4d}: λ̂ = {v:5.2f} ± {e:.2f}  {ok}" for s, v, e, ok in rows),
    sep="\n",
)
