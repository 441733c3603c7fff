// The amp rows of the training table: mixed-precision training (bf16, fp16 with loss scaling, fp8).
// Issue 4 adds them here; until then the technique contributes no rows.
#include "rows.hpp"

namespace cost_report {

std::vector<Row> amp_rows() { return {}; }

}  // namespace cost_report
