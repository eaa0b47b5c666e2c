/* -*- c++ -*- ----------------------------------------------------------
   mdpot: LAMMPS pair style for deployed mdpot models (docs/contract.md).

   pair_style mdpot keyword value ...
     device cpu|cuda|auto      where the model runs (auto: one GPU per rank if torch sees one; default auto)
     threads N|auto            torch threads per rank (auto: OMP_NUM_THREADS, else cores / ranks per node)
     jit_optimize yes|no       TorchScript's profiling graph executor (default no: slower on CPU)
     max_edges N|auto          at most N edges per model call (strictly local models: neighbour-list entries),
                               per block call (message_passing exchange); unused in message_passing ghosts. auto
                               (default): max_memory / the file's bytes_per_edge (measured at deploy), within
                               1000 .. 10^8; 400000 for a file without that key
     max_memory SIZE           max_edges auto: memory budget of one model call per rank, e.g. 2GB or 500MB
                               (MB = 1024^2 bytes; default 2GB)
     message_passing exchange|ghosts   message-passing models: exchange node features with the ranks owning
                               the ghosts before every block (ghost cutoff r_max + skin), or widen the ghost
                               shell to the receptive field (default: exchange if the file has the mp_* methods;
                               an AOTInductor package .pt2 has none and runs in ghosts)
     malloc_tuning yes|no      glibc: keep freed memory in the heap while the style lives (default yes)
     stats yes|no              the end-of-run "mdpot stats:" line (default yes)
     dump_edges FILE           debugging: every compute writes its edges to FILE.<rank>
     committee mean|first [every N]   a committee file: `mean` (default) evaluates every member on every step and
                               the members' mean drives the dynamics; `first` drives it with member 0 alone (its
                               energy, forces and virials, bit for bit those of its own file) and evaluates all
                               members, for the spread, only on steps that are multiples of N (default 1) and on
                               steps a fix pair trigger flag asks for (below)
     uncertainty_file FILE [every M]   a committee file: rank 0 writes the step, max, min and mean force
                               deviation (eV/Å) and the energy deviation (eV) to FILE every M steps (default 1;
                               under committee first every N, default N, and M must be a multiple of N)
     uncertainty_halt VALUE    a committee file: stop the run (error) when an atom's force deviation exceeds
                               VALUE eV/Å, naming the step and the atom (under committee first: checked on the
                               steps the committee is evaluated on)
   pair_coeff * * model.pt El1 El2 ...   (one element per LAMMPS type, NULL to skip a type under hybrid;
                                          model.pt is also searched in LAMMPS_POTENTIALS; a TorchScript file
                                          or an AOTInductor package, told apart by content, not by name)

   A committee file (format version 7) runs the members' mean (or member 0: committee first) and reports their
   spread (docs/contract.md,
   "Committee files"): per atom the force deviation sqrt(mean_k |F_k,i - F̄_i|^2), each member's forces summed
   over ranks first (`fix ID all pair N mdpot force_deviation 0` makes it a per-atom vector f_ID;
   `energy_deviation 0` each atom's energy deviation, eV); globally
   `compute ID all pair mdpot`: c_ID[1..4] = max, min, mean force deviation (eV/Å), energy deviation (eV); c_ID[5]
   = the step they were formed on.
   Trigger flags (extract "force_deviation_flag" / "energy_deviation_flag", an int each): `fix ID all pair N mdpot
   force_deviation 1` sets one on its steps, so that under `committee first` every member is evaluated on those
   steps; under `committee mean` every step is evaluated anyway and the flags change nothing. Between the steps the
   committee is evaluated on, the spread (compute pair, the per-atom vectors) is that of the latest such step, the
   per-atom values kept with their atoms by atom ID.

   Only LAMMPS headers here; the model runner (mdpot_model.h, torch) sits behind the private MDPotImpl.
------------------------------------------------------------------------- */

#ifndef LMP_PAIR_MDPOT_H
#define LMP_PAIR_MDPOT_H

#include "pair.h"

#include <memory>
#include <string>
#include <vector>

namespace LAMMPS_NS {

struct MDPotImpl;

class PairMDPot : public Pair {
 public:
  PairMDPot(class LAMMPS *);
  ~PairMDPot() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  void finish() override;
  double memory_usage() override;
  void *extract(const char *, int &) override;
  void *extract_peratom(const char *, int &) override;

  // message_passing exchange: rows of x_b (forward) and of their gradients (reverse) per LAMMPS atom
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

 private:
  enum class DeviceChoice { CPU, CUDA, AUTO };
  enum class MessagePassing { DEFAULT, EXCHANGE, GHOSTS };
  enum class CommitteeMode { MEAN, FIRST };

  // settings()
  DeviceChoice device_choice;
  int num_threads;          // 0 = auto
  bool jit_optimize;        // TorchScript profiling executor on/off
  long max_edges;           // edges per model call (per block call in exchange mode); auto: chosen by init_style
  bool max_edges_given;     // set explicitly (not auto): warn when a message-passing model cannot honour it
  double max_memory;        // max_edges auto: bytes one model call may use
  bool max_memory_given;
  bool malloc_tuning;       // glibc mallopt while this style lives
  bool print_stats;         // finish() reports what the model evaluated
  std::string edge_file;    // debug: write every compute's edge list to FILE.<rank> ("" = off)
  std::string uncertainty_path;     // uncertainty_file ("" = off)
  int uncertainty_every;            // ... every M steps
  bool uncertainty_every_given;
  CommitteeMode committee_mode;     // committee keyword
  int committee_every;              // committee first every N
  bool committee_given;             // the keyword was used (refused for a single model)
  double uncertainty_halt;          // uncertainty_halt threshold, eV/Å (<= 0: off)
  FILE *uncertainty_fp;             // rank 0: open uncertainty_file
  bigint uncertainty_last_step;     // the step last written (a step computed again is not written twice)
  MessagePassing mp_request;    // message_passing keyword

  // coeff(): model metadata and type map
  std::unique_ptr<MDPotImpl> impl;
  std::string model_path;
  std::vector<int> type_to_model;    // LAMMPS type (1-based) -> model index, -1 for NULL
  double r_max;
  double receptive_field;
  bool ghost_centres;    // message_passing ghosts with receptive_field > r_max: edges centred on ghosts too
  bool exchange;         // message_passing exchange (resolved by init_style)
  bool rows_float32;     // exchange: a float32 model's rows travel as float32, two values per double
  int comm_width;        // doubles per atom of the rows being communicated
  std::string logged_mode;    // the mode last written to the log
  std::string logged_max_edges;    // the max_edges line last written to the log
  int committee;         // members of a committee file (K), 1 for a single model
  int force_deviation_flag, energy_deviation_flag;    // fix pair trigger flags (extract): evaluate every member now
  bigint deviation_step;     // the step the spread was last formed on (-1: not yet)
  std::string logged_committee;    // the committee line last written to the log
  double extra_values[5];    // pvector of a committee (compute pair): max, min, mean force deviation, energy deviation,
                             // the step they were formed on
  int max_hops;          // message passing: edges centred on atoms up to this many hops from a local atom

  // init_style(): a ghost cutoff raised for a message-passing model, given back by the destructor
  double raised_cutghost;    // the value set here, < 0 if none
  double user_cutghost;      // the user's value before it

  void allocate();
  std::string select_device(const std::string &path);
  std::string resolve_model_path(const std::string &path);
  void set_threads();
  void load_model(const std::string &path, const std::string &device);
  void map_types(int nelem, char **names);
  void log_setup();
  void ensure_ghost_cutoff();
  void choose_message_passing();
  void choose_max_edges();

  // compute() helpers
  int pack_inputs(int first_centre);
  bool run_model(bool all_members);    // all_members: a committee file evaluates every member; false: the model failed
  bool run_exchange();    // false: a model call failed (faults.rank_error)
  const double *exchange_forward_rows(const double *local_rows, int width);
  const double *exchange_reverse_rows(const double *all_rows, int width);
  int row_doubles(int width) const;
  void scatter_forces();
  void tally_energy();
  void tally_virial();
  void tally_atom_virial();
  void check_finite_positions();
  bool dump_edges(int chunk);    // false: the file could not be opened (faults.rank_error)
  void mark_message_hops();
  void tally_stats(double model_seconds);
  void check_finite_outputs();
  void note_overlap(tagint a, tagint b, double distance);
  void stop_on_faults(const char *when);
  bool committee_step() const;
  void log_committee();
  void committee_begin();
  void committee_accumulate();
  void committee_finish();
  void keep_deviations();
  void carry_deviations();
  void close_uncertainty_file();
};

}    // namespace LAMMPS_NS

#endif
