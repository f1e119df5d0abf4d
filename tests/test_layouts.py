"""Every initializer honours kernel layouts (``with_layout``, ``reinit(layout=)``).

An initializer with axis arguments declares them (``layout_fields``) and gets
the layout's axes; one without draws the same distribution in every layout. A
torch / equinox ``(out, in, *spatial)`` kernel must get the structure a Flax
``(*spatial, in, out)`` kernel gets, read along the right axes.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinit
from jaxinit import testing
from jaxinit._src import registry

KEY = jax.random.key(7)
# initializers whose draw is elementwise i.i.d. or constant: the same in every layout
LAYOUT_FREE = {"zeros", "ones", "constant", "normal", "uniform", "truncated_normal"}
LAYOUT_FREE |= {"zero_rows"}  # an embedding's rows: the same axis in every layout


@pytest.mark.parametrize("name", registry.names(include_aliases=False))
def test_every_initializer_with_axes_declares_them(name):
  cls = registry.lookup(name)
  axis_fields = {
    f.name for f in dataclasses.fields(cls) if f.name.endswith("_axis") and f.name != "batch_axis"
  }
  declared = {f for f, _ in cls.layout_fields}
  if name in LAYOUT_FREE:
    assert not axis_fields and not declared
  else:
    assert declared and declared <= axis_fields, f"{name} must declare its layout fields"
    assert axis_fields <= declared | {"column_axis"}, f"{name} has undeclared axis arguments"


def _torch(tree_shape, init):
  return jaxinit.reinit({"w": jnp.zeros(tree_shape)}, {"w": init}, KEY, layout="torch")["w"]


def test_orthogonal_torch_conv_kernel_has_orthonormal_rows():
  w = _torch((16, 8, 3, 3), jaxinit.orthogonal())  # the audit's example: error 0.87 before
  m = w.reshape(16, -1)
  assert float(jnp.abs(m @ m.T - jnp.eye(16)).max()) < 1e-5


@pytest.mark.parametrize(
  "make,out",
  [(lambda: eqx.nn.Conv2d(8, 16, 3, key=KEY), 16), (lambda: eqx.nn.Linear(64, 32, key=KEY), 32)],
  ids=["Conv2d(8, 16, 3)", "Linear(64, 32)"],
)
def test_equinox_modules_get_orthogonal_rows_by_default(make, out):
  module = jaxinit.reinit(make(), {"weight": jaxinit.orthogonal()}, KEY)
  m = module.weight.reshape(out, -1)
  assert float(jnp.abs(m @ m.T - jnp.eye(out)).max()) < 1e-5


@pytest.mark.parametrize("column_axis", [-1, -2])
def test_delta_orthogonal_torch_kernel_is_the_flax_kernel_transposed(column_axis):
  init = jaxinit.delta_orthogonal(2.0, column_axis=column_axis)
  flax = init(KEY, (3, 3, 16, 32))
  torch = init.with_layout("torch")(KEY, (32, 16, 3, 3))
  np.testing.assert_array_equal(torch, jnp.transpose(flax, (3, 2, 0, 1)))
  q = torch[:, :, 1, 1]
  assert float(jnp.abs(q.T @ q / 4 - jnp.eye(16)).max()) < 1e-5
  assert float(jnp.abs(torch.at[:, :, 1, 1].set(0)).max()) == 0


@pytest.mark.parametrize("groups", [1, 4])
def test_dirac_torch_kernel_passes_its_input_through_a_torch_layout_conv(groups):
  w = _torch((16, 16 // groups, 3, 3), jaxinit.dirac(groups=groups))
  x = jax.random.normal(KEY, (2, 16, 5, 5))
  y = jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups
  )
  np.testing.assert_array_equal(y, x)


def test_identity_torch_weight_copies_its_input():
  w = _torch((32, 24), jaxinit.identity())
  x = jax.random.normal(KEY, (24,))
  np.testing.assert_array_equal((w @ x)[:24], x)
  np.testing.assert_array_equal(w, jaxinit.identity()(KEY, (24, 32)).T)


def test_sparse_counts_nonzeros_per_torch_output_unit():
  w = _torch((16, 8, 3, 3), jaxinit.sparse(num_nonzero=5, values=jaxinit.he_normal()))
  assert ((w != 0).reshape(16, -1).sum(axis=1) == 5).all()
  # the values are He normal with the torch fans: fan_in = 8 * 9
  big = _torch((512, 64, 3, 3), jaxinit.sparse(sparsity=0.0, values=jaxinit.he_normal()))
  testing.assert_moments(big, mean=0.0, var=2 / (64 * 9))


def test_normalized_torch_units_have_unit_norm():
  w = _torch((16, 8, 3, 3), jaxinit.normalized(3.0))
  np.testing.assert_allclose(jnp.linalg.norm(w.reshape(16, -1), axis=1), 3.0, rtol=1e-5)


def test_axes_set_explicitly_win_and_with_layout_always_applies():
  init = jaxinit.orthogonal(column_axis=1)
  assert init.for_layout(jaxinit.LAYOUTS["torch"], (4, 8)) is init
  assert init.with_layout("torch") == jaxinit.orthogonal(column_axis=0)


def test_a_layout_an_initializer_cannot_follow_is_a_clear_error():
  dense_general = jaxinit.Layout("dense_general", in_axis=0, out_axis=(1, 2))
  with pytest.raises(ValueError, match=r"^jaxinit\.orthogonal: cannot follow the layout .*"):
    jaxinit.orthogonal().with_layout(dense_general)
  with pytest.raises(ValueError, match=r"^jaxinit\.reinit: .*cannot follow the layout"):
    jaxinit.reinit({"w": jnp.zeros((4, 2, 3))}, {"w": jaxinit.dirac()}, KEY, layout=dense_general)
