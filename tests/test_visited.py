"""lstm_research.visited: the length that work over a padded batch's visited steps runs at."""
import jax
import jax.numpy as jnp
import pytest

from lstm_research import visited


def _length_run(lengths, T=128):
    """The static length ``at_visited_length`` ran its function at."""
    return visited.at_visited_length(visited.longest_of(lengths), T, lambda L, z: z + L,
                                     jnp.int32(0))


@pytest.mark.parametrize("lengths,expected", [([0], 32), ([1, 0], 32), ([32], 32),
                                              ([33, 5], 64), ([100, 127], 128), ([128], 128)])
def test_the_function_runs_at_the_longest_sequence_rounded_up_to_chunks(lengths, expected):
    assert int(jax.jit(_length_run)(jnp.array(lengths))) == expected


def test_without_lengths_or_chunks_it_runs_over_every_step():
    assert visited.at_visited_length(None, 128, lambda L: L) == 128
    assert visited.at_visited_length(jnp.int32(3), 100, lambda L: L) == 100  # not 32k
    assert visited.at_visited_length(jnp.int32(3), 32, lambda L: L) == 32


def test_in_a_pack_every_member_follows_the_longest_of_all():
    lengths = jnp.array([[10], [70], [33]])
    with visited.shared_trip_count("pack"):
        shared = jax.vmap(_length_run, axis_name="pack")(lengths)
    assert shared.tolist() == [96, 96, 96]
    assert jax.vmap(_length_run)(lengths).tolist() == [32, 96, 64]  # each its own

