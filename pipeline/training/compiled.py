"""Models kept with their traced train and test steps for later trials of the same
architecture (seeds of one configuration, a resumed search, the test evaluation of the
best trial, tests that share a process).

A new Keras model traces its train and test steps on its first fit (the LSTM's
`while_v2` forward pass and gradient, ~1.8 s here) and TensorFlow instantiates each
traced function on its first call (~1.5 s more): most of a short trial. A kept model of
the same architecture skips both: it takes over the new model's starting state (every
variable, the dropout layers' seed states included, and a fresh optimizer's slots),
so it trains bit for bit as the new model would have (tests/test_compiled.py).

`lease` hands a model out for a block (`take`: it leaves the pool, never two users at
once, also with worker threads; `give_back` when the block ends). Keyed by the
model's whole config and its compile config except the learning rate, which Keras keeps
in a variable: anything else that differs (units, dropout rate, vocabulary size, pooling
variant...) is another architecture.
"""

from __future__ import annotations

import gc
import json
import random
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import keras
import numpy as np


def architecture_key(model: keras.Model) -> str:
    """What a traced step depends on: the model's config (layers, shapes, dtypes) and its
    compile config with the optimizer's learning rate left out (a variable the step
    reads) and `jit_compile` (`set_jit` retraces when it changes)."""
    compiled = model.get_compile_config() or {}
    optimizer = dict(compiled.get("optimizer") or {})
    settings = dict(optimizer.get("config") or {})
    if isinstance(settings.get("learning_rate"), int | float):
        settings.pop("learning_rate")
    optimizer["config"] = settings
    compiled = {k: v for k, v in compiled.items() if k not in ("optimizer", "jit_compile")}
    return json.dumps(
        {"model": model.get_config(), "compile": compiled, "optimizer": optimizer},
        sort_keys=True,
        default=repr,
    )


def _same_layout(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        tuple(x.shape) == tuple(y.shape) and x.dtype == y.dtype for x, y in zip(a, b, strict=True)
    )


def restart_from(kept: keras.Model, fresh: keras.Model) -> bool:
    """Give `kept` the starting state of `fresh` (same architecture): every model variable
    (weights and seed states) and the optimizer's, as a fresh optimizer builds them.
    False (nothing changed) when the layouts differ."""
    fresh.optimizer.build(fresh.trainable_variables)
    kept.optimizer.build(kept.trainable_variables)  # a no-op once built
    pairs = [
        (kept.variables, fresh.variables),
        (kept.optimizer.variables, fresh.optimizer.variables),
    ]
    if not all(_same_layout(a, b) for a, b in pairs):
        return False
    for ours, theirs in pairs:
        for dst, src in zip(ours, theirs, strict=True):
            dst.assign(src)
    kept.stop_training = False
    return True


class KeptModels:
    """Idle compiled models by architecture, the least recently used dropped first."""

    def __init__(self) -> None:
        self._idle: OrderedDict[str, keras.Model] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def take(self, fresh: keras.Model, capacity: int) -> keras.Model:
        """A kept model of `fresh`'s architecture holding `fresh`'s starting state, or
        `fresh` itself."""
        if capacity <= 0:
            return fresh
        key = architecture_key(fresh)
        with self._lock:
            kept = self._idle.pop(key, None)
        if kept is None or not restart_from(kept, fresh):
            return fresh
        self.hits += 1
        return kept

    def give_back(self, model: keras.Model, capacity: int) -> None:
        """`model` is free for a later trial (its caller no longer uses it)."""
        if capacity <= 0:
            return
        key = architecture_key(model)
        with self._lock:
            self._idle[key] = model
            self._idle.move_to_end(key)
            while len(self._idle) > capacity:
                self._idle.popitem(last=False)

    @contextmanager
    def lease(self, fresh: keras.Model, capacity: int) -> Iterator[keras.Model]:
        """`take` for the block, `give_back` when it ends normally: a model whose trial
        failed is dropped, never handed to the next trial."""
        model = self.take(fresh, capacity)
        yield model
        self.give_back(model, capacity)

    def clear(self) -> None:
        with self._lock:
            self._idle.clear()

    def __len__(self) -> int:
        return len(self._idle)


KEPT = KeptModels()  # this process's pool

# The batch shapes (training.xla.shape_keys) each model's XLA steps have compiled: a kept
# model's fit compiles only shapes it has not seen (train.jit_compile=auto counts those).
XLA_SHAPES: weakref.WeakKeyDictionary[keras.Model, frozenset] = weakref.WeakKeyDictionary()


def set_jit(model: keras.Model, jit: bool, shards: int = 1) -> None:
    """XLA or not for the next fit or evaluation: Keras' `jit_compile`, or with `shards` > 1
    steps over that many XLA blocks of each batch (`training.sharded`). A kept model
    traced another way drops its steps, so Keras traces them again with the new setting."""
    from pipeline.training.sharded import use_shards

    traced_with = model.jit_compile
    resharded = use_shards(model, shards if jit else 1)
    model.jit_compile = jit and shards <= 1
    if resharded or model.jit_compile != traced_with:
        model.train_function = model.test_function = model.predict_function = None
        XLA_SHAPES.pop(model, None)


def _private_state_found() -> bool:
    from keras.src.backend.common import global_state
    from tensorflow.python.eager import context

    return hasattr(global_state, "GLOBAL_STATE_TRACKER") and hasattr(context.context(), "_rng")


def clear_session(keep_kernels: bool = True) -> None:
    """`keras.backend.clear_session()` except its clear of TensorFlow's eager kernel cache,
    where the instantiated steps of the kept models live (re-instantiating them costs
    ~1.5 s): Keras' global state (layer-name counters, seed generator) is reset, so
    layers get the same names, and garbage is collected. `keep_kernels=False` (no models
    kept, search.keep_compiled=0) is Keras' own call."""
    import tensorflow as tf
    from keras.src.backend.common import global_state

    if not (keep_kernels and _private_state_found()):  # or another Keras/TF: its own way
        keras.backend.clear_session()
        return
    global_state.GLOBAL_STATE_TRACKER = threading.local()  # what clear_session resets
    global_state.GLOBAL_SETTINGS_TRACKER = threading.local()
    tf.compat.v1.reset_default_graph()
    gc.collect()


def start_trial(seed: int, keep_kernels: bool = True) -> None:
    """`clear_session()` then `keras.utils.set_random_seed(seed)`, which also clears the
    kernel cache (TensorFlow's `set_seed`): Keras', Python's, NumPy's and TensorFlow's
    global seeds are set as it sets them, so the same weights and op seeds follow
    (tests/test_compiled.py). `keep_kernels=False`: Keras' own two calls."""
    from keras.src.backend.common import global_state
    from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
    from tensorflow.python.eager import context

    clear_session(keep_kernels)
    if not (keep_kernels and _private_state_found()):
        keras.utils.set_random_seed(seed)
        return
    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)  # set_random_seed's part
    random.seed(seed)
    np.random.seed(seed)
    ctx = context.context()
    ctx._seed = seed  # context._set_global_seed, without TFE_ContextClearCaches
    ctx._rng = random.Random(seed)
