/* ----------------------------------------------------------------------
   mdpot: the model runner, independent of LAMMPS.

   mdpot::Model loads a deployed file (docs/contract.md) onto a device, refuses exactly the files the
   Python loader refuses (mdpot.deploy.load_model: every metadata key, the format version, architecture,
   dtype, units, cutoffs, JSON and the weights digest), and evaluates the contract's forward on a packed
   graph held by the caller on the host. A file is either a TorchScript archive or an AOTInductor package
   (.pt2, format version 3), told apart by its content; a package is also checked against the machine and
   the requested device (its `target`) before any of its code is loaded. Results come back as host float64 arrays. Every failure is an
   mdpot::Error with a one-line message; nothing here prints or aborts.

   Only standard headers here: torch stays in mdpot_model.cpp, so that callers (the pair style, the
   mdpot_model_check tool) compile without it.
------------------------------------------------------------------------- */

#ifndef MDPOT_MODEL_H
#define MDPOT_MODEL_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace mdpot {

// The one exception type of the runner; what() is one line without a C++ backtrace.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The decoded metadata of a deployed file (docs/contract.md, "Metadata").
struct Metadata {
  int format_version = 0;
  std::string architecture;
  std::vector<std::string> elements;
  double r_max = 0.0;              // Å
  int num_layers = 0;
  double receptive_field = 0.0;    // Å
  std::string model_dtype;
  std::string energy_units, length_units;
  std::string torch_version, mdpot_version;
  std::string provenance, config;    // JSON text, syntax-checked
  std::string weights_sha256;
  std::string kernels = "reference";    // "fused": the file calls libmdpot_ops.so's operators (format version 5 or 6)
  double bytes_per_edge = 0.0;    // optional key: peak bytes per edge of one model call at deploy; 0 if absent
  int committee_size = 1;    // K members of a committee file (format version 7, "Committee files"); 1 otherwise
};

// A packed graph on the host, in the contract's layout; the caller keeps the arrays alive during run().
struct Inputs {
  const double *pos = nullptr;           // [n_atoms, 3], Å
  const int64_t *atom_type = nullptr;    // [n_atoms], model type index
  const int64_t *edge_index = nullptr;   // [2, n_edges]: centres, then neighbours
  int64_t n_atoms = 0;
  int64_t n_edges = 0;
  int64_t n_local = 0;                   // the first n_local atoms are local
  bool want_atom_virial = false;
};

// Host float64 contiguous results; valid until the next run() or the Model's destruction.
struct Outputs {
  const double *atom_energy = nullptr;    // [n_local], eV
  const double *forces = nullptr;         // [n_atoms, 3], eV/Å
  const double *virial = nullptr;         // [3, 3], eV
  const double *atom_virial = nullptr;    // [n_atoms, 3, 3], eV; nullptr unless asked for
  // A committee file: the fields above are the members' mean (as the file's forward forms it,
  // x_0 + mean_k (x_k - x_0)), and these are every member's, K = committee_size; nullptr for a single model.
  int committee_size = 1;
  const double *member_energy = nullptr;    // [K, n_local], eV
  const double *member_forces = nullptr;    // [K, n_atoms, 3], eV/Å
};

// What run() evaluates of a committee file (ignored for a single model).
enum class CommitteeCall {
  MEAN,           // every member (committee_forward); Outputs' main fields are the members' mean
  FIRST,          // every member; the main fields are member 0's (as FIRST_ALONE gives them), member_* every member's
  FIRST_ALONE,    // member 0's own forward alone (members[0], the module its single file holds); member_* nullptr
};

class Model {
 public:
  // Loads and checks `path` (an existing file) onto `device` ("cpu", "cuda", "cuda:1", ...).
  // `optimize`: TorchScript's profiling graph executor during run() (off: see docs/contract.md); no effect
  // on a package, whose program runs on the calling thread with at::get_num_threads() OpenMP threads.
  Model(const std::string &path, const std::string &device, bool optimize);
  ~Model();
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;

  const Metadata &metadata() const;
  std::string device() const;
  std::string format() const;    // "torchscript" or "aoti" (an AOTInductor package)
  // A package's loops, from its target record: "dynamic" (parallel, atomic scatters) or "serial"; "" otherwise.
  std::string package_threads() const;
  void set_optimize(bool optimize);

  // Evaluates the model (a committee file: as `call` says; by default its committee_forward, the mean formed
  // here); throws Error on a torch failure or outputs of the wrong shape.
  Outputs run(const Inputs &in, CommitteeCall call = CommitteeCall::MEAN);

  // Bytes held between calls: the cached zero edge shifts, the host outputs and the exchange step's tensors.
  double memory_usage() const;

  /* Message passing by per-block feature exchange (docs/message_passing_exchange.md). A file whose module
     has every mp_* method (contract::BLOCK_METHODS; a version-4 file also PAIR_METHODS, else it is refused)
     can be run block by block; the caller exchanges the rows of x_b between blocks. One step: exchange_begin,
     exchange_forward(b) for b = 0..L-1, exchange_readout, exchange_backward(b) for b = L-1..0, exchange_finish.
     Tensors stay with the model between these calls. Rows cross as arrays of doubles: a float64 model's row
     of W values is W doubles; a float32 model's row holds its W float32 values packed two per double, ceil(W/2)
     doubles (the last float 0 when W is odd), to be moved as bytes and summed as float32. */

  // "" if the file can be run block by block, else why not (one phrase).
  std::string exchange_unsupported() const;
  int exchange_blocks() const;                     // L
  const std::vector<int> &exchange_widths() const;  // W_0 .. W_{L-1}: values per atom of each x_b
  bool exchange_geometry_once() const;             // mp_geometry: with the graph kept, edge geometry once per step

  // Edge vectors are pos[j] - pos[i] (float64); every centre is one of the first n_local atoms and
  // edge_index[0] is non-decreasing. Each block is evaluated in chunks of centres of at most max_edges
  // edges (one centre at least). Computes the embedding.
  void exchange_begin(const Inputs &in, int64_t max_edges);
  // Block b on the local centres. x_rows: [n_atoms, W_b] (every row an edge reads), ignored for b = 0,
  // where the rows come from the embedding. Returns x_{b+1} of the local centres [n_local, W_{b+1}]
  // (nullptr after the last block).
  const double *exchange_forward(int b, const double *x_rows);
  // Per-atom energies [n_local], eV, the per-element shift included. A model with a short-range pair term
  // (mp_has_pair) also gets mp_pair on the step's edges here, per chunk of centres: its energies are added,
  // and its edge gradients join the blocks' for exchange_finish.
  const double *exchange_readout();
  // Backward through block b. g_x_local: d E / d x_{b+1} of the local centres [n_local, W_{b+1}], the owners'
  // sums after the reverse exchange (ignored for the last block). Returns d E / d x_b for every row
  // [n_atoms, W_b], to be summed into the owners (nullptr for b = 0: block 0's inputs are functions of the types).
  const double *exchange_backward(int b, const double *g_x_local);
  // Forces, virial and per-atom virial from the per-edge gradients summed over the blocks, as run() returns them.
  Outputs exchange_finish();
  int exchange_chunks() const;    // chunks of centres per block in the current step

 private:
  struct Impl;
  std::unique_ptr<Impl> impl;
};

// The device a model file is bound to, read from its records without loading it: "cpu" for a TorchScript file
// that calls the fused kernels (they run on the CPU only) and for a package compiled for the CPU, "cuda" for a
// package compiled for CUDA, "" for a file that runs on any device and for one that cannot be read (loading it
// says why). `why`, when given, receives the reason for a bound file, for messages.
std::string bound_device(const std::string &path, std::string *why = nullptr);

// Device and thread helpers for the caller's choice of device.
int cuda_device_count();    // 0 without CUDA; throws Error if the query fails
void set_num_threads(int n);
int num_threads();
std::string torch_version();

// glibc malloc tuning while at least one holder lives (mallopt is process-wide). Each model call
// allocates and frees hundreds of MB of temporaries; above glibc's mmap threshold every free returns
// them to the OS and the next call page-faults its working set again, so the cost per atom grows with
// the system size (docs/benchmarks/bench_lammps.md). The tuning keeps freed memory in the heap; the
// last holder to go restores glibc's default thresholds. A no-op without glibc.
class MallocTuning {
 public:
  MallocTuning();
  ~MallocTuning();
  MallocTuning(const MallocTuning &) = delete;
  MallocTuning &operator=(const MallocTuning &) = delete;
  static bool supported();
};

// SHA-256 (FIPS 180-4) of a byte stream, as lowercase hex.
class Sha256 {
 public:
  Sha256();
  void update(const void *data, size_t n);
  void update(const std::string &s) { update(s.data(), s.size()); }
  std::string hexdigest();    // finishes the hash; call once

 private:
  uint32_t state[8];
  unsigned char block[64];
  size_t fill = 0;
  uint64_t total = 0;
  void compress(const unsigned char *p);
};

// Syntax check of one JSON value (RFC 8259; no NaN/Infinity), surrounding whitespace allowed.
bool is_json(const std::string &text);

}    // namespace mdpot

#endif
