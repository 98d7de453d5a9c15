"""One quantizer choice (CLAQ, GPTQ or RTN with its settings) and the dispatcher that applies it
to a layer; shared by the synthetic block, the checkpoint path, the CLI and the benchmarks."""

from dataclasses import asdict, dataclass, field

from quant.claq import CLAQSettings

METHODS = ("claq", "gptq", "rtn")


@dataclass(frozen=True)
class Method:
    """Members:
        name: "claq", "gptq" or "rtn".
        bits: CLAQ: average bits in [2, 4] (adaptive precision); GPTQ/RTN: integer 1..8.
        group_size: GPTQ/RTN input columns per scale/zero (None: one group per row).
        claq: the CLAQ settings (its `bits` is kept equal to `bits`).
    """

    name: str = "claq"
    bits: float = 2.2
    group_size: int | None = 128
    claq: CLAQSettings = field(default_factory=CLAQSettings)

    def __post_init__(self):
        if self.name not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, not {self.name!r}")
        if self.name == "claq":
            if self.claq.bits != self.bits:
                object.__setattr__(self, "claq", CLAQSettings(**{**self.claq.as_dict(),
                                                                 "bits": float(self.bits)}))
        elif float(self.bits) != int(self.bits) or not 1 <= self.bits <= 8:
            raise ValueError(f"{self.name} bits must be an integer in 1..8, not {self.bits}")

    def metadata(self):
        """The JSON-ready {"name", "settings"} recorded in the `.q` file."""
        if self.name == "claq":
            return {"name": "claq", "settings": self.claq.as_dict()}
        s = {"bits": int(self.bits), "group_size": self.group_size}
        if self.name == "gptq":
            s.update(act_order=self.claq.act_order, blocksize=self.claq.blocksize,
                     percdamp=self.claq.percdamp, static_groups=True)
        return {"name": self.name, "settings": s}

    def label(self):
        if self.name == "claq":
            c = self.claq
            orr = f"+OR{c.outlier_ratio_top:g}/{c.outlier_ratio_rest:g}" \
                if (c.outlier_ratio_top or c.outlier_ratio_rest) else ""
            return f"CLAQ-{self.bits:g}{orr}"
        g = f" g{self.group_size}" if self.group_size else ""
        return f"{self.name.upper()}-{int(self.bits)}{g}"

    def as_dict(self):
        return asdict(self)


def quantize_layer(method, w, h, name="layer", device="cpu", progress=None):
    """Quantize w [N, K] (Hessian h [K, K]; unused by RTN) with `method`; returns a `QLayer`."""
    from quant import claq, uniform
    if method.name == "claq":
        return claq.claq(w, h, method.claq, name=name, device=device, progress=progress)
    if method.name == "gptq":
        c = method.claq
        return uniform.gptq_uniform(w.to(device), h.to(device), int(method.bits),
                                    method.group_size, c.act_order, c.blocksize, c.percdamp,
                                    name=name, progress=progress)
    q = uniform.rtn(w.to(device), int(method.bits), method.group_size, name=name)
    if progress is not None:
        progress(w.shape[1])
    return q
