/* -*- c++ -*- ----------------------------------------------------------
   mdpot: LAMMPS pair style for deployed mdpot models (docs/contract.md).

   pair_style mdpot [device cpu|cuda|auto] [threads N|auto] [jit_optimize yes|no] [max_edges N]
                    [dump_edges FILE]
   pair_coeff * * model.pt El1 El2 ...      (one element per LAMMPS type, NULL to skip a type)

   Only LAMMPS headers here: the torch state lives in the private MDPotImpl (pair_mdpot.cpp).
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

 private:
  enum class DeviceChoice { CPU, CUDA, AUTO };

  // settings()
  DeviceChoice device_choice;
  int num_threads;    // 0 = auto
  bool jit_optimize;        // TorchScript profiling executor on/off
  long max_edges;           // strictly local models: evaluate at most this many edges per model call
  bool max_edges_given;     // set explicitly: warn when a message-passing model cannot honour it
  std::string edge_file;    // debug: write every compute's edge list to FILE.<rank> ("" = off)

  // coeff(): model metadata and type map
  std::unique_ptr<MDPotImpl> impl;
  std::string model_path;
  std::vector<std::string> model_elements;
  std::vector<int> type_to_model;    // LAMMPS type (1-based) -> model index, -1 for NULL
  double r_max;
  double receptive_field;
  bool ghost_centres;    // receptive_field > r_max: edges centred on ghosts are needed too
  int max_hops;          // message passing: edges centred on atoms up to this many hops from a local atom

  void allocate();
  void select_device();
  void set_threads();
  void load_model(const std::string &path);
  void map_types(int narg, char **arg);

  // compute() helpers
  int pack_inputs(int first_centre);
  void run_model(int vflag_atom_now);
  void scatter_forces();
  void tally_energy();
  void tally_virial();
  void tally_atom_virial();
  void check_finite_positions(const char *when);
  void dump_edges(int chunk);
  void mark_message_hops();
  void tally_stats(double model_seconds);
  void check_finite_outputs();
};

}    // namespace LAMMPS_NS

#endif
