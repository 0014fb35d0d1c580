// Built when CMake found no MPI: the runtime still runs one process.
#include "stepc/communicator.h"

#include "stepc/error.h"

namespace stepc {

bool hasMpi() { return false; }

std::shared_ptr<Communicator> mpiCommunicator() {
  throw Error("this stepc was built without MPI: install libopenmpi-dev (scripts/install-deps.sh) "
              "and rebuild to run data-parallel");
}

} // namespace stepc
