#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <vector>

namespace bert {

/// One labelled review of modeldata's small_fine_foods (Amazon Fine Food reviews, Stanford SNAP).
struct Review {
  std::string text;  ///< the review as written (UTF-8; may hold HTML such as "<br />")
  int label = 0;     ///< 1: score "great" (5 stars), 0: score "other"
};

/// Reads a CSV that R's write.csv made of small_fine_foods' training_data or testing_data
/// (scripts/setup_bert_assets.sh writes fine_foods_train.csv and fine_foods_test.csv): the header
/// "product","review","score", then one record per review; fields are double-quoted, a quote
/// inside a field is doubled, and a field may span lines. Unquoted fields and CRLF line ends are
/// accepted too. Throws, naming the file and line, on a wrong header, a record without exactly 3
/// fields, a score other than great/other, or broken quoting.
///
/// Example:
///   std::vector<Review> test = bert::read_fine_foods_csv(data_dir + "/fine_foods_test.csv");
///   // test.size() == 1000; test[0].label == 1
std::vector<Review> read_fine_foods_csv(const std::string& path);

/// read_fine_foods_csv on a stream; `source` names it in error messages.
///   std::istringstream in("\"product\",\"review\",\"score\"\n\"B1\",\"Yum\",\"great\"\n");
///   bert::parse_fine_foods_csv(in, "inline");  // {{"Yum", 1}}
std::vector<Review> parse_fine_foods_csv(std::istream& in, const std::string& source);

/// Reviews split into a training part and a held-out validation part.
struct TrainValidationSplit {
  std::vector<Review> train;
  std::vector<Review> validation;
};

/// Holds out `validation_size` reviews chosen by a seeded shuffle: a Fisher-Yates shuffle of the
/// indices driven by std::mt19937_64(seed) (whose output the C++ standard fixes), so the split
/// is the same with every compiler and standard library. Both parts keep the input order.
///
/// Example:
///   auto split = bert::split_train_validation(train_reviews, 500, 0);
///   // split.train.size() == 3500, split.validation.size() == 500
TrainValidationSplit split_train_validation(const std::vector<Review>& reviews,
                                            size_t validation_size, uint64_t seed);

}  // namespace bert
