// Bisection over fused groups: which fusions explain a wrong result
// (compiler/passes/fusion_plan.h, bisectFusedGroups; `stepc bisect-fusion`).
//
// Delta debugging in the form that finds one culprit in a logarithmic number
// of probes: a binary search for the shortest failing prefix of the
// candidates (in plan order) names one culprit, the prefix's last group; the
// search repeats below it with the culprits found so far always fused, and
// stops once the culprits fail on their own. Every set it returns was seen
// failing, and each group in it was needed: without it, a probe passed.
#include "fusion_plan.h"

#include <algorithm>

namespace stepc {

std::vector<size_t> bisectFusedGroups(
    const std::vector<size_t> &candidates,
    const std::function<bool(const std::vector<size_t> &)> &fails) {
  std::vector<size_t> culprits;
  // The first `count` candidates plus the culprits, sorted.
  auto probeSet = [&](size_t count) {
    std::vector<size_t> set(candidates.begin(), candidates.begin() + count);
    set.insert(set.end(), culprits.begin(), culprits.end());
    std::sort(set.begin(), set.end());
    return set;
  };
  // Invariant: probeSet(bad) fails (seen, or the caller's full probe), and
  // probeSet(good) passes (nothing fused passes by assumption; later, the
  // culprits alone were seen passing).
  size_t bad = candidates.size();
  while (bad > 0) {
    size_t good = 0;
    if (!culprits.empty() && fails(probeSet(0)))
      break;
    while (bad - good > 1) {
      size_t mid = good + (bad - good) / 2;
      if (fails(probeSet(mid)))
        bad = mid;
      else
        good = mid;
    }
    culprits.push_back(candidates[bad - 1]);
    bad -= 1;
  }
  std::sort(culprits.begin(), culprits.end());
  return culprits;
}

} // namespace stepc
