// The prune rows of the training table: pruned and fine-tuned models.
// Issue 7 adds them here; until then the technique contributes no rows.
#include "rows.hpp"

namespace cost_report {

std::vector<Row> prune_rows() { return {}; }

}  // namespace cost_report
