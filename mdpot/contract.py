"""The facts of the model contract (``docs/contract.md``), stated once.

Python reads these constants directly; the C++ side (the LAMMPS plugin's model runner) includes
``mdpot_contract.h``, generated from this module by :func:`cpp_header` when the plugin is built, so both
loaders accept and refuse exactly the same files. Nothing here imports torch or any other mdpot module.
"""
from __future__ import annotations

from typing import Tuple

#: Version of the deployed-file format this mdpot writes. 2: a message-passing model of mdpot's own NequIP also
#: carries the block interface (``mp_*`` methods, ``docs/contract.md``) that LAMMPS's ``message_passing exchange``
#: runs; 1: the whole-graph ``forward`` only.
FORMAT_VERSION = 2
#: Version of a TorchScript message-passing file whose model has a short-range pair term (``model.repulsion``):
#: version 2 plus ``mp_has_pair``/``mp_pair``, which ``message_passing exchange`` must run. Every other file keeps
#: the lowest version that describes it (a whole-graph ``forward`` always includes the pair term), so an older mdpot
#: refuses only the files it would run wrong.
PAIR_FORMAT_VERSION = 4
#: Version of a TorchScript file whose model calls mdpot's fused operators (``torch.ops.mdpot.*``, ``mdpot deploy
#: --kernels fused``): version 2 or 4 otherwise (block interface, pair term when ``mp_has_pair``), but it loads only
#: where ``libmdpot_ops.so`` is loaded first, which an mdpot that does not know it never does. 8: the operators
#: include ``distinct`` and ``tp_scatter_shared`` (NequIP's radial network once per distinct edge length), which an
#: mdpot that wrote version 5 lacks; 5 (the tensor products only) is still read.
FUSED_FORMAT_VERSION = 8
#: The earlier version of fused TorchScript files (``tp_scatter`` and ``tp_gather`` only).
FUSED_FORMAT_VERSION_5 = 5
#: The block interface a message-passing TorchScript file carries (``docs/message_passing_exchange.md``): a file
#: runs in LAMMPS's ``message_passing exchange`` when it has all of these and ``mp_num_blocks() == num_layers``.
BLOCK_METHODS: Tuple[str, ...] = ("mp_num_blocks", "mp_feature_widths", "mp_state_widths", "mp_embed", "mp_block",
                                  "mp_block_vjp", "mp_readout", "mp_edge_derivatives")
#: Optional, with ``BLOCK_METHODS`` (files deployed from stop 25 on; no version change: a reader that does not know
#: them runs ``mp_block``): the edges' geometry once per step (``mp_geometry``) and a block that reads it
#: (``mp_block_geometry``), so that an engine keeping the autograd graph does not recompute it in every block.
GEOMETRY_METHODS: Tuple[str, ...] = ("mp_geometry", "mp_block_geometry")
#: The short-range pair term of the block interface: required, with ``BLOCK_METHODS``, in a version-4 file.
PAIR_METHODS: Tuple[str, ...] = ("mp_has_pair", "mp_pair")
#: Version of a committee file (``mdpot deploy A.ckpt B.ckpt ... -o committee.pt``, ``docs/contract.md``,
#: "Committee files"): one TorchScript module holding K >= 2 members; ``forward`` is the contract with the members'
#: mean outputs, ``COMMITTEE_METHOD`` returns every member's outputs stacked. Reference or fused kernels (``kernels``
#: says which); no block interface. The LAMMPS pair style runs the mean and reports the members' spread.
COMMITTEE_FORMAT_VERSION = 7
#: The committee file's method returning the per-member outputs ``[K, ...]`` on the same graph.
COMMITTEE_METHOD = "committee_forward"
#: Fewest members of a committee: a single model is deployed as an ordinary file.
MIN_COMMITTEE_SIZE = 2
#: Versions this mdpot reads: every earlier version keeps loading (version 1 runs whole-graph only).
READABLE_FORMAT_VERSIONS: Tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
#: Version written into AOTInductor packages (``mdpot deploy --format aoti``, ``.pt2``): version 2's whole-graph
#: contract compiled to native code, without the block interface (``docs/contract.md``, "AOTInductor packages").
AOTI_FORMAT_VERSION = 3
#: Version of an AOTInductor package whose program calls mdpot's fused operators (``mdpot deploy --format aoti
#: --kernels fused``): version 3 otherwise, but it runs only where ``libmdpot_ops.so`` is loaded before the package,
#: which an mdpot that does not know it never does.
AOTI_FUSED_FORMAT_VERSION = 6
#: The versions of AOTInductor packages; every other readable version is a TorchScript file's.
AOTI_FORMAT_VERSIONS: Tuple[int, ...] = (AOTI_FORMAT_VERSION, AOTI_FUSED_FORMAT_VERSION)
#: The versions of TorchScript files calling the fused operators.
TORCHSCRIPT_FUSED_FORMAT_VERSIONS: Tuple[int, ...] = (FUSED_FORMAT_VERSION_5, FUSED_FORMAT_VERSION)
#: The versions of files calling the fused operators (a TorchScript file, a package): ``kernels`` is ``fused``
#: exactly in these.
FUSED_FORMAT_VERSIONS: Tuple[int, ...] = TORCHSCRIPT_FUSED_FORMAT_VERSIONS + (AOTI_FUSED_FORMAT_VERSION,)
#: The package's one program.
AOTI_PROGRAM = "model"
#: Folder (under the archive's top folder) of mdpot's metadata records in a package; the digest covers ``data/``.
AOTI_METADATA_FOLDER = "mdpot"
AOTI_DIGESTED_FOLDER = "data"
#: Extra metadata key of a package: the device, machine and CPU instruction set it was compiled for (JSON).
AOTI_TARGET = "target"
#: Each instruction-set flag a CPU package may be compiled with -> the CPU features (``/proc/cpuinfo``
#: ``flags`` on x86, ``Features`` on ARM) a machine needs to run it. A flag not listed here is refused.
AOTI_ARCH_FLAG_FEATURES: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("-mavx2", ("avx2",)), ("-mfma", ("fma",)), ("-mf16c", ("f16c",)),
    ("-mavx512f", ("avx512f",)), ("-mavx512dq", ("avx512dq",)), ("-mavx512vl", ("avx512vl",)),
    ("-mavx512bw", ("avx512bw",)), ("-mavx512vnni", ("avx512_vnni",)), ("-mavx512bf16", ("avx512_bf16",)),
    ("-mamx-tile", ("amx_tile",)), ("-mamx-bf16", ("amx_bf16",)), ("-mamx-int8", ("amx_int8",)),
    ("-mamx-fp16", ("amx_fp16",)),
    ("-march=armv8-a", ("asimd",)), ("-march=armv8-a+sve", ("asimd", "sve")),
    ("-march=armv8-a+sve+bf16", ("asimd", "sve", "bf16")), ("-msve-vector-bits=128", ("sve",)),
    ("-msve-vector-bits=256", ("sve",)),
)

#: Formats ``mdpot deploy`` writes, with the file suffix each is known by: TorchScript (format version 2, or
#: ``PAIR_FORMAT_VERSION``, or ``FUSED_FORMAT_VERSION``) and AOTInductor packages (``AOTI_FORMAT_VERSION``, or
#: ``AOTI_FUSED_FORMAT_VERSION``). The kind of a file is read from its
#: content, never its suffix.
DEPLOY_FORMATS: Tuple[str, ...] = ("torchscript", "aoti")
FORMAT_SUFFIXES = {"torchscript": ".pt", "aoti": ".pt2"}
#: The format ``mdpot deploy`` writes when neither ``--format`` nor a ``.pt2`` output name says otherwise.
DEFAULT_FORMAT = "torchscript"
#: ``--cpu-isa`` choices of an AOTInductor package -> the vector width in bits the compiler may use (torch's
#: ``cpp.simdlen``; ``None``: torch's pick for the deploying machine).
AOTI_CPU_ISAS = {"native": None, "avx2": 256, "avx512": 512}
#: How a CPU package's loops use threads: "dynamic" (OpenMP loops that follow the running thread count: torch's
#: set_num_threads, OMP_NUM_THREADS, the pair style's ``threads``) or "serial" (no OpenMP: fastest with one thread
#: per MPI rank, never more than one thread). Recorded as ``threads`` in the package's ``target``.
AOTI_THREADS: Tuple[str, ...] = ("dynamic", "serial")

FORMAT_VERSION_KEY = "mdpot_format_version"
ARCHITECTURE = "architecture"
ELEMENTS = "elements"
R_MAX = "r_max"
NUM_LAYERS = "num_layers"
RECEPTIVE_FIELD = "receptive_field"
MODEL_DTYPE = "model_dtype"
ENERGY_UNITS = "energy_units"
LENGTH_UNITS = "length_units"
TORCH_VERSION = "torch_version"
MDPOT_VERSION = "mdpot_version"
PROVENANCE = "provenance"
CONFIG = "config"
WEIGHTS_SHA256 = "weights_sha256"
#: Keys of a committee file (format version ``COMMITTEE_FORMAT_VERSION``), required there and only there: the number
#: of members K (an integer >= ``MIN_COMMITTEE_SIZE``) and a JSON list of K objects, each member's provenance.
COMMITTEE_SIZE = "committee_size"
COMMITTEE_MEMBERS = "committee_members"
COMMITTEE_KEYS: Tuple[str, ...] = (COMMITTEE_SIZE, COMMITTEE_MEMBERS)

#: Optional metadata key of a deployed file: which implementation of the tensor products it calls, one of
#: ``KERNELS``; absent means ``reference``. ``fused`` exactly when the format version is one of
#: ``FUSED_FORMAT_VERSIONS`` (8, or 5 from an earlier mdpot, for TorchScript; 6 for a package).
KERNELS_KEY = "kernels"
KERNELS: Tuple[str, ...] = ("reference", "fused")
#: What ``mdpot deploy`` writes into a TorchScript file without ``--kernels`` (AOTInductor packages: ``reference``).
DEFAULT_KERNELS = "fused"


def default_kernels(format: str) -> str:
    """The kernels a deployed file of ``format`` gets when none are asked for: the fused operators in a
    TorchScript file, the reference (pure torch) in an AOTInductor package. A package can call the fused operators
    (``--kernels fused``, format version 6), but measured it was not faster: Inductor fuses the reference
    products, gathers and scatters into its own loops, which the operators' calls interrupt
    (``docs/benchmarks/fused_kernels.md``)."""
    return DEFAULT_KERNELS if format == "torchscript" else "reference"


#: File name of the fused operators' library, beside the plugin.
OPS_LIBRARY = "libmdpot_ops.so"

#: Every metadata key a deployed file must carry (TorchScript ``_extra_files``), in a fixed order.
ALL_KEYS: Tuple[str, ...] = (
    FORMAT_VERSION_KEY, ARCHITECTURE, ELEMENTS, R_MAX, NUM_LAYERS, RECEPTIVE_FIELD, MODEL_DTYPE,
    ENERGY_UNITS, LENGTH_UNITS, TORCH_VERSION, MDPOT_VERSION, PROVENANCE, CONFIG, WEIGHTS_SHA256,
)

#: Optional metadata key (``docs/contract.md``): peak bytes one whole-graph model call (contract ``forward`` with forces
#: and virial) allocates per edge, measured when the file is deployed (:mod:`mdpot.deploy.memory`). LAMMPS's
#: ``max_edges auto`` divides its memory budget by it. Files without it (older deploys, wrapped models) keep working.
BYTES_PER_EDGE = "bytes_per_edge"
#: Keys a file may lack. Readers ask for the keys they know and ignore any other, so a new optional key needs no
#: format-version bump; a present value must be valid.
OPTIONAL_KEYS: Tuple[str, ...] = (BYTES_PER_EDGE,)

#: Values a loader accepts.
DTYPES: Tuple[str, ...] = ("float32", "float64")
ARCHITECTURE_NAMES: Tuple[str, ...] = ("allegro", "nequip")
ENERGY_UNIT = "eV"
LENGTH_UNIT = "Å"

#: How numbers in the metadata are written (full match, ASCII only; no sign, space, ``inf`` or ``nan``
#: where these do not allow it). Python (``re``) and C++ (``std::regex``, ECMAScript) read them alike.
INTEGER_PATTERN = "[0-9]+"
FLOAT_PATTERN = "[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?"
#: ``num_layers`` is an integer from 1 to this (a C++ ``int``).
MAX_NUM_LAYERS = 2**31 - 1

#: Atoms closer than this (Å) are reported as overlapping instead of producing infinite energies
#: (ASE calculator and LAMMPS pair style alike).
OVERLAP_DISTANCE = 0.01


def _cpp_string(text: str) -> str:
    """A C++ UTF-8 string literal (non-ASCII bytes as octal escapes, so the header is plain ASCII)."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def cpp_header() -> str:
    """The text of ``mdpot_contract.h``: these constants for the C++ model runner."""
    def array(name: str, values) -> str:
        items = ", ".join(_cpp_string(v) for v in values)
        return f"inline constexpr const char *{name}[] = {{{items}}};\n" \
               f"inline constexpr int {name}_COUNT = {len(values)};\n"

    return (
        "// Generated from mdpot/contract.py by mdpot.lammps.plugin when the plugin is built. Do not edit.\n"
        "#ifndef MDPOT_CONTRACT_H\n#define MDPOT_CONTRACT_H\n\n"
        "namespace mdpot {\nnamespace contract {\n\n"
        f"inline constexpr int FORMAT_VERSION = {FORMAT_VERSION};\n"
        f"inline constexpr int PAIR_FORMAT_VERSION = {PAIR_FORMAT_VERSION};\n"
        f"inline constexpr int FUSED_FORMAT_VERSION = {FUSED_FORMAT_VERSION};\n"
        f"inline constexpr int COMMITTEE_FORMAT_VERSION = {COMMITTEE_FORMAT_VERSION};\n"
        f"inline constexpr int MIN_COMMITTEE_SIZE = {MIN_COMMITTEE_SIZE};\n"
        f"inline constexpr const char *COMMITTEE_METHOD = {_cpp_string(COMMITTEE_METHOD)};\n"
        f"inline constexpr const char *KEY_KERNELS = {_cpp_string(KERNELS_KEY)};\n"
        f"inline constexpr const char *OPS_LIBRARY = {_cpp_string(OPS_LIBRARY)};\n"
        + "inline constexpr int TORCHSCRIPT_FUSED_FORMAT_VERSIONS[] = {"
        + ", ".join(map(str, TORCHSCRIPT_FUSED_FORMAT_VERSIONS)) + "};\n"
        + f"inline constexpr int TORCHSCRIPT_FUSED_FORMAT_VERSIONS_COUNT = {len(TORCHSCRIPT_FUSED_FORMAT_VERSIONS)};\n"
        + "inline constexpr int READABLE_FORMAT_VERSIONS[] = {" + ", ".join(map(str, READABLE_FORMAT_VERSIONS)) + "};\n"
        + f"inline constexpr int READABLE_FORMAT_VERSIONS_COUNT = {len(READABLE_FORMAT_VERSIONS)};\n"
        + "".join(f"inline constexpr const char *KEY_{name} = {_cpp_string(value)};\n" for name, value in (
            ("FORMAT_VERSION", FORMAT_VERSION_KEY), ("ARCHITECTURE", ARCHITECTURE), ("ELEMENTS", ELEMENTS),
            ("R_MAX", R_MAX), ("NUM_LAYERS", NUM_LAYERS), ("RECEPTIVE_FIELD", RECEPTIVE_FIELD),
            ("MODEL_DTYPE", MODEL_DTYPE), ("ENERGY_UNITS", ENERGY_UNITS), ("LENGTH_UNITS", LENGTH_UNITS),
            ("TORCH_VERSION", TORCH_VERSION), ("MDPOT_VERSION", MDPOT_VERSION), ("PROVENANCE", PROVENANCE),
            ("CONFIG", CONFIG), ("WEIGHTS_SHA256", WEIGHTS_SHA256), ("BYTES_PER_EDGE", BYTES_PER_EDGE),
            ("COMMITTEE_SIZE", COMMITTEE_SIZE), ("COMMITTEE_MEMBERS", COMMITTEE_MEMBERS)))
        + array("ALL_KEYS", ALL_KEYS)
        + array("BLOCK_METHODS", BLOCK_METHODS)
        + array("PAIR_METHODS", PAIR_METHODS)
        + array("GEOMETRY_METHODS", GEOMETRY_METHODS)
        + array("DTYPES", DTYPES)
        + array("KERNELS", KERNELS)
        + array("ARCHITECTURE_NAMES", ARCHITECTURE_NAMES)
        + f"inline constexpr const char *ENERGY_UNIT = {_cpp_string(ENERGY_UNIT)};\n"
        f"inline constexpr const char *LENGTH_UNIT = {_cpp_string(LENGTH_UNIT)};\n"
        f"inline constexpr const char *INTEGER_PATTERN = {_cpp_string(INTEGER_PATTERN)};\n"
        f"inline constexpr const char *FLOAT_PATTERN = {_cpp_string(FLOAT_PATTERN)};\n"
        f"inline constexpr int MAX_NUM_LAYERS = {MAX_NUM_LAYERS};\n"
        f"inline constexpr double OVERLAP_DISTANCE = {OVERLAP_DISTANCE!r};\n"
        f"inline constexpr int AOTI_FORMAT_VERSION = {AOTI_FORMAT_VERSION};\n"
        f"inline constexpr int AOTI_FUSED_FORMAT_VERSION = {AOTI_FUSED_FORMAT_VERSION};\n"
        f"inline constexpr const char *AOTI_PROGRAM = {_cpp_string(AOTI_PROGRAM)};\n"
        f"inline constexpr const char *AOTI_METADATA_FOLDER = {_cpp_string(AOTI_METADATA_FOLDER)};\n"
        f"inline constexpr const char *AOTI_DIGESTED_FOLDER = {_cpp_string(AOTI_DIGESTED_FOLDER)};\n"
        f"inline constexpr const char *AOTI_TARGET = {_cpp_string(AOTI_TARGET)};\n"
        "// AOTI_ARCH_FLAGS[k] needs the CPU features AOTI_ARCH_FLAG_FEATURES[k] (space separated)\n"
        + array("AOTI_ARCH_FLAGS", [flag for flag, _ in AOTI_ARCH_FLAG_FEATURES])
        + array("AOTI_ARCH_FLAG_FEATURES", [" ".join(features) for _, features in AOTI_ARCH_FLAG_FEATURES])
        +
        "\n}    // namespace contract\n}    // namespace mdpot\n\n#endif\n"
    )


if __name__ == "__main__":
    print(cpp_header(), end="")
