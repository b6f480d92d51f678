"""NIR (the Neuromorphic Intermediate Representation): snndist's parameters and config <-> a NIR graph.

The graph is ``input -> [Affine -> CubaLIF (<- Affine, if recurrent)] per layer -> Affine -> LI -> output``.
NIR states each node as an ODE in continuous time (seconds); snndist steps its network every ``dt``.
With ``a = exp(-dt / tau_syn)``, ``b = exp(-dt / tau_mem)`` and inputs held over a step:

    NIR CubaLIF                    snndist layer
    tau_syn, tau_mem (s)           tau_syn_ms / 1000, tau_mem_ms / 1000  (exact: a = exp(-dt / tau_syn))
    w_in                           1 / (1 - a): the step's synaptic gain (1 - a) w_in is snndist's 1
    r                              R
    v_leak, v_threshold, v_reset   U_rest, theta, U_reset
    readout LI: tau, r, v_leak     readout tau_ms / 1000, 1 / (1 - a_o), 0

``flavor="snntorch"`` writes what snnTorch's importer reads as snndist computes: snnTorch steps every
0.1 ms with forward Euler (decay ``1 - dt / tau``) and wants ``r = tau_mem / dt``, so time constants
are ``1e-4 s / (1 - decay)`` (one snndist step is one of its steps) and voltages are scaled by
``1 / ((1 - b) R)``. What NIR has no field for (the reset kind, the readout's reduction over time,
the surrogate, dt) is in the graph's metadata under ``snndist.*``.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, NamedTuple

import numpy as np

from snndist.config import Config
from snndist.errors import NirError, one_line

SNNTORCH_STEP_S = 1e-4  # snnTorch's NIR importer and exporter step, fixed in its code
FLAVORS = ("nir", "snntorch")


def nir_module():
    try:
        import nir
    except ImportError:
        raise NirError("NIR export and import need the nir package: pip install 'snndist[nir]'") from None
    return nir


# ------------------------------------------------------------ the math: decays <-> time constants
class Timing(NamedTuple):
    """How a graph's time constants read as per-step decays: its step (s) and discretisation."""

    step_s: float
    euler: bool  # forward Euler: decay = 1 - step / tau; else exact: exp(-step / tau)

    def tau(self, decay: float) -> float:
        return self.step_s / (1.0 - decay) if self.euler else -self.step_s / math.log(decay)

    def decay(self, tau: float) -> float:
        return 1.0 - self.step_s / tau if self.euler else math.exp(-self.step_s / tau)


def _tidy(x: float) -> float:
    """12 significant digits: 10.000000000000002 ms from a float round trip is written as 10."""
    return float(f"{x:.12g}")


def _full(value: float, size: int) -> np.ndarray:
    return np.full((size,), value, np.float64)


# ----------------------------------------------------------------------------- export
def to_graph(params: dict, cfg: Config, flavor: str = "nir"):
    """``params`` (host arrays, weights ``[in, out]``) of ``cfg``'s network as a ``nir.NIRGraph``."""
    nir = nir_module()
    m, dt_ms = cfg.model, cfg.data.dt_ms
    timing = Timing(SNNTORCH_STEP_S, True) if flavor == "snntorch" else Timing(dt_ms / 1000.0, False)
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array([cfg.data.num_inputs]))}
    edges, previous = [], "input"
    for i, layer in enumerate(m.layers):
        p, name, n = params[f"hidden{i}"], f"hidden{i}", layer.size
        a, b = math.exp(-dt_ms / layer.tau_syn_ms), math.exp(-dt_ms / layer.tau_mem_ms)
        if flavor == "snntorch":  # voltages in snnTorch's units, where r = tau_mem / dt = 1 / (1 - b)
            scale, r = 1.0 / ((1.0 - b) * layer.resistance), 1.0 / (1.0 - b)
            tau_syn, tau_mem = timing.tau(a), timing.tau(b)
        else:  # exact: the configured time constants themselves
            scale, r = 1.0, layer.resistance
            tau_syn, tau_mem = layer.tau_syn_ms / 1000.0, layer.tau_mem_ms / 1000.0
        nodes[f"{name}.w"] = nir.Affine(weight=np.asarray(p["w"]).T.copy(), bias=np.asarray(p["b"]).copy())
        nodes[f"{name}.lif"] = nir.CubaLIF(
            tau_syn=_full(tau_syn, n), tau_mem=_full(tau_mem, n), r=_full(r, n),
            v_leak=_full(layer.v_rest * scale, n), v_threshold=_full(layer.threshold * scale, n),
            v_reset=_full(layer.v_reset * scale, n), w_in=_full(1.0 / (1.0 - a), n))
        edges += [(previous, f"{name}.w"), (f"{name}.w", f"{name}.lif")]
        if layer.recurrent:  # V s_{t-1}: NIR's edges carry the last step's output back
            v = np.asarray(p["v"])
            nodes[f"{name}.rec"] = nir.Affine(weight=v.T.copy(), bias=np.zeros(n, v.dtype))
            edges += [(f"{name}.lif", f"{name}.rec"), (f"{name}.rec", f"{name}.lif")]
        previous = f"{name}.lif"
    a_o = math.exp(-dt_ms / m.readout.tau_ms)
    k = cfg.data.num_classes
    nodes["readout.w"] = nir.Affine(weight=np.asarray(params["readout"]["w"]).T.copy(),
                                    bias=np.asarray(params["readout"]["b"]).copy())
    tau_o = timing.tau(a_o) if flavor == "snntorch" else m.readout.tau_ms / 1000.0
    nodes["readout.li"] = nir.LI(tau=_full(tau_o, k), r=_full(1.0 / (1.0 - a_o), k), v_leak=_full(0.0, k))
    nodes["output"] = nir.Output(output_type=np.array([k]))
    edges += [(previous, "readout.w"), ("readout.w", "readout.li"), ("readout.li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=_metadata(cfg, flavor, timing), type_check=False)


def _metadata(cfg: Config, flavor: str, timing: Timing) -> dict:
    """What NIR has no field for, so that nothing is dropped silently (and a re-import restores it)."""
    m = cfg.model
    meta = {
        "snndist.flavor": flavor,
        "snndist.dt_ms": cfg.data.dt_ms,
        "snndist.step_s": timing.step_s,
        "snndist.discretization": "euler" if timing.euler else "exact",
        "snndist.input": "a spike is the value 1 held for one step; each node is stepped with its input held "
                         "over the step (exponential Euler): I_t = a I_{t-1} + (1 - a) w_in y_t, "
                         "U_t = U_rest + (U' - U_rest) b + (1 - b) r I_t",
        "snndist.timesteps": cfg.data.timesteps,
        "snndist.readout.reduce": m.readout.reduce,
        "snndist.readout.note": f"the loss and accuracy use the readout reduced over time ({m.readout.reduce}); "
                                "NIR has no node for it",
        "snndist.surrogate": m.surrogate,
        # Training-only fields (initialisers, surrogate parameters, rate penalties), so that a re-import
        # restores the whole config; the graph's own values win over these.
        "snndist.model_config": json.dumps(cfg.to_dict()["model"]),
    }
    for i, layer in enumerate(m.layers):
        meta[f"snndist.hidden{i}.reset"] = layer.reset
        meta[f"snndist.hidden{i}.reset.note"] = (
            "soft: U' = U - (v_threshold - v_reset) at the step after a spike; NIR's CubaLIF resets to v_reset"
            if layer.reset == "soft" else "hard: U' = v_reset at the step after a spike, as NIR's CubaLIF")
    if flavor == "snntorch":
        meta["snndist.snntorch.note"] = ("time constants read with forward Euler at snnTorch's 1e-4 s step, one "
                                         "snndist step each; voltages scaled by 1 / ((1 - b) R)")
    return meta


# ----------------------------------------------------------------------------- import
class Layer(NamedTuple):
    """One hidden layer read from a graph: snndist parameters and the config fields."""

    params: dict
    fields: dict


def read_graph(path: str | os.PathLike):
    nir = nir_module()
    if not os.path.isfile(path):
        raise NirError(f"{path}: no such file")
    try:
        return nir.read(os.fspath(path), type_check=False)  # shapes: checked below, naming the edge
    except Exception as err:  # h5py, or nir on a file that is HDF5 but not a graph
        raise NirError(f"{path}: not a NIR file ({type(err).__name__}: {one_line(err, 150)})") from None


def _uniform(node_name: str, field: str, values, size: int) -> float:
    """One value per layer, as snndist has: a NIR array over the neurons, or a scalar."""
    arr = np.asarray(values, np.float64).reshape(-1)
    if arr.size not in (1, size):
        raise NirError(f"node {node_name!r}: {field} has {arr.size} values for {size} neurons")
    if not np.allclose(arr, arr[0], rtol=1e-9, atol=0):
        raise NirError(f"node {node_name!r}: {field} differs across neurons; snndist has one value per layer")
    return float(arr[0])


def _weights(nir, name: str, node, fan_in: int, target: str) -> tuple[np.ndarray, np.ndarray]:
    """An Affine or Linear node as snndist's ``[in, out]`` weights and bias; checks the edge into it."""
    if not isinstance(node, (nir.Affine, nir.Linear)):
        raise NirError(f"node {name!r} ({type(node).__name__}): expected an Affine or Linear before {target}")
    w = np.asarray(node.weight, np.float32)
    if w.ndim != 2:
        raise NirError(f"node {name!r}: weight has shape {list(w.shape)}, not [out, in]")
    if w.shape[1] != fan_in:
        raise NirError(f"edge into {name!r}: it takes {w.shape[1]} values, its source gives {fan_in}")
    bias = np.asarray(node.bias, np.float32).reshape(-1) if isinstance(node, nir.Affine) else np.zeros(w.shape[0])
    if bias.size != w.shape[0]:
        raise NirError(f"node {name!r}: bias has {bias.size} values for {w.shape[0]} outputs")
    return w.T.copy(), bias.astype(np.float32)


class _Walk:
    """The graph as a layer stack, or a NirError naming the node that is not."""

    KINDS = ("Input", "Output", "Affine", "Linear", "CubaLIF", "LI")

    def __init__(self, nir, graph):
        self.nir, self.nodes = nir, graph.nodes
        for name, node in self.nodes.items():
            if type(node).__name__ not in self.KINDS:
                raise NirError(f"node {name!r} is a NIR {type(node).__name__}; snndist reads "
                               f"{', '.join(self.KINDS)} in a layer stack")
        self.succ = {n: [] for n in self.nodes}
        self.pred = {n: [] for n in self.nodes}
        for src, dst in graph.edges:
            for end in (src, dst):
                if end not in self.nodes:
                    raise NirError(f"edge {src!r} -> {dst!r}: no node {end!r}")
            self.succ[src].append(dst)
            self.pred[dst].append(src)
        self.seen: set[str] = set()

    def only(self, names: list[str], after: str) -> str:
        if len(names) != 1:
            raise NirError(f"node {after!r} feeds {len(names)} nodes ({', '.join(names) or 'none'}); "
                           "snndist reads a stack of layers")
        self.seen.add(names[0])
        return names[0]

    def first(self) -> tuple[str, int]:
        inputs = [n for n, node in self.nodes.items() if isinstance(node, self.nir.Input)]
        if len(inputs) != 1:
            raise NirError(f"the graph has {len(inputs)} Input nodes; snndist reads one")
        shape = np.asarray(next(iter(self.nodes[inputs[0]].input_type.values()))).reshape(-1)
        self.seen.add(inputs[0])
        return inputs[0], int(np.prod(shape))


def from_graph(graph, timing: Timing, dt_ms: float) -> tuple[dict, dict]:
    """A ``nir.NIRGraph`` as (snndist params, the ``model`` section and ``data`` sizes of a config)."""
    nir = nir_module()
    walk = _Walk(nir, graph)
    meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (graph.metadata or {}).items()}
    current, fan_in = walk.first()
    following = walk.succ[current]
    params, layers = {}, []
    while True:
        affine = walk.only(following, current)
        target = walk.only(walk.succ[affine], affine)
        node = walk.nodes[target]
        w, bias = _weights(nir, affine, walk.nodes[affine], fan_in, repr(target))
        n = w.shape[1]
        if sorted(walk.pred[affine]) != [current]:
            raise NirError(f"node {[p for p in walk.pred[affine] if p != current][0]!r} feeds {affine!r} "
                           "from outside the layer stack")
        if isinstance(node, nir.LI):
            readout, decay = _readout(target, node, w, bias, timing)
            end = walk.only(walk.succ[target], target)
            if not isinstance(walk.nodes[end], nir.Output):
                raise NirError(f"node {end!r} ({type(walk.nodes[end]).__name__}) follows the readout "
                               f"{target!r}; snndist expects the Output")
            break
        if not isinstance(node, nir.CubaLIF):
            raise NirError(f"node {target!r} ({type(node).__name__}): expected a CubaLIF (hidden layer) "
                           "or an LI (readout) after an Affine")
        i = len(layers)
        layer = _hidden(target, node, w, bias, timing, dt_ms, meta.get(f"snndist.hidden{i}.reset", "hard"))
        # Recurrence: an Affine whose only source and only target are this layer.
        rec = [s for s in walk.succ[target] if walk.succ[s] == [target] and walk.pred[s] == [target]]
        if len(rec) > 1:
            raise NirError(f"node {target!r} has {len(rec)} recurrent Affine nodes; snndist reads one")
        if rec:
            walk.seen.add(rec[0])
            v, v_bias = _weights(nir, rec[0], walk.nodes[rec[0]], n, repr(target))
            if v.shape[1] != n:
                raise NirError(f"edge {rec[0]!r} -> {target!r}: it gives {v.shape[1]} values, {target!r} takes {n}")
            layer.params["v"] = v
            layer.params["b"] = (layer.params["b"] + v_bias).astype(np.float32)  # a bias every step either way
            layer.fields["recurrent"] = True
        extra = [p for p in walk.pred[target] if p not in (affine, *rec)]
        if extra:
            raise NirError(f"node {extra[0]!r} feeds {target!r} from outside the layer stack")
        params[f"hidden{i}"] = layer.params
        layers.append(layer.fields)
        current, fan_in, following = target, n, [s for s in walk.succ[target] if s not in rec]
    if not layers:
        raise NirError("the graph has no hidden CubaLIF layer before its readout")
    params["readout"] = readout
    stray = [name for name in walk.nodes if name not in walk.seen]
    if stray:
        raise NirError(f"node {stray[0]!r} is not on the layer stack from the Input to the Output")
    model = {"layers": layers,
             "readout": {"tau_ms": _tidy(-dt_ms / math.log(decay)), "reduce": meta.get("snndist.readout.reduce",
                                                                                      "mean")},
             "surrogate": meta.get("snndist.surrogate", "relu")}
    data = {"num_inputs": params["hidden0"]["w"].shape[0], "num_classes": readout["w"].shape[1]}
    return params, {"model": model, "data": data}


def _decay(name: str, field: str, tau: float, timing: Timing) -> float:
    if not tau > 0:
        raise NirError(f"node {name!r}: {field}={tau:g} must be > 0")
    decay = timing.decay(tau)
    if not 0 < decay < 1:
        raise NirError(f"node {name!r}: {field}={tau:g} s is not longer than the step of {timing.step_s:g} s")
    return decay


def _hidden(name: str, node, w: np.ndarray, bias: np.ndarray, timing: Timing, dt_ms: float, reset: str) -> Layer:
    n = w.shape[1]
    get = lambda field: _uniform(name, field, getattr(node, field), n)
    a = _decay(name, "tau_syn", get("tau_syn"), timing)
    b = _decay(name, "tau_mem", get("tau_mem"), timing)
    gain = (1.0 - a) * get("w_in")  # the synapse's gain per step: snndist folds it into W and b
    if not math.isclose(gain, 1.0, rel_tol=1e-12):
        w, bias = (w * gain).astype(np.float32), (bias * gain).astype(np.float32)
    v_reset = node.v_reset if node.v_reset is not None else 0.0
    fields = {"size": n, "tau_syn_ms": _tidy(-dt_ms / math.log(a)), "tau_mem_ms": _tidy(-dt_ms / math.log(b)),
              "threshold": get("v_threshold"), "v_reset": _uniform(name, "v_reset", v_reset, n),
              "v_rest": get("v_leak"), "resistance": get("r"), "reset": reset}
    return Layer({"w": w, "b": bias}, fields)


def _readout(name: str, node, w: np.ndarray, bias: np.ndarray, timing: Timing) -> tuple[dict, float]:
    k = w.shape[1]
    if not np.allclose(np.asarray(node.v_leak, np.float64), 0.0):
        raise NirError(f"node {name!r}: v_leak is not 0; snndist's readout has no leak voltage")
    decay = _decay(name, "tau", _uniform(name, "tau", node.tau, k), timing)
    gain = (1.0 - decay) * _uniform(name, "r", node.r, k)
    if not math.isclose(gain, 1.0, rel_tol=1e-12):
        w, bias = (w * gain).astype(np.float32), (bias * gain).astype(np.float32)
    return {"w": w, "b": bias}, decay
