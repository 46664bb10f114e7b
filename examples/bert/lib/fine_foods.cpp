#include "fine_foods.h"

#include <fstream>
#include <random>
#include <utility>

#include <torch/torch.h>

namespace bert {
namespace {

// One CSV record and the line it starts on (1-based).
struct Record {
  std::vector<std::string> fields;
  int64_t line = 0;
};

// RFC 4180 records, as R's write.csv writes them: fields separated by ',', records by "\n" (or
// "\r\n"); a quoted field may hold ',', newlines and doubled quotes ("" -> ").
class CsvReader {
 public:
  CsvReader(std::istream& in, const std::string& source) : in_(in), source_(source) {}

  // Reads the next record; false at the end of the input.
  bool next(Record& record) {
    record.fields.clear();
    record.line = line_;
    if (in_.peek() == std::char_traits<char>::eof()) return false;
    std::string field;
    for (;;) {
      field.clear();
      const bool quoted = in_.peek() == '"';
      if (quoted) {
        read_quoted(field);
      } else {
        read_unquoted(field);
      }
      record.fields.push_back(std::move(field));
      const int c = in_.get();
      if (c == ',') continue;
      if (c == '\r' && in_.peek() == '\n') in_.get();
      if (c == '\r' || c == '\n' || c == std::char_traits<char>::eof()) {
        if (c != std::char_traits<char>::eof()) ++line_;
        return true;
      }
      TORCH_CHECK(false, source_, ":", line_, ": expected ',' or the end of the line after ",
                  quoted ? "a closing quote" : "a field", ", got '", static_cast<char>(c), "'");
    }
  }

 private:
  void read_quoted(std::string& field) {
    const int64_t start = line_;
    in_.get();  // opening quote
    for (;;) {
      const int c = in_.get();
      TORCH_CHECK(c != std::char_traits<char>::eof(), source_, ":", start,
                  ": expected a closing quote for the field that starts here, got the end of "
                  "the file");
      if (c == '"') {
        if (in_.peek() != '"') return;
        in_.get();  // doubled quote
      } else if (c == '\n') {
        ++line_;
      }
      field.push_back(static_cast<char>(c));
    }
  }

  void read_unquoted(std::string& field) {
    for (int c = in_.peek();
         c != ',' && c != '\n' && c != '\r' && c != std::char_traits<char>::eof(); c = in_.peek()) {
      TORCH_CHECK(c != '"', source_, ":", line_, ": expected a quote only at the start of a ",
                  "field, got one inside the unquoted field '", field, "'");
      field.push_back(static_cast<char>(in_.get()));
    }
  }

  std::istream& in_;
  const std::string& source_;
  int64_t line_ = 1;
};

const std::vector<std::string> kHeader = {"product", "review", "score"};

}  // namespace

std::vector<Review> parse_fine_foods_csv(std::istream& in, const std::string& source) {
  CsvReader reader(in, source);
  Record record;
  TORCH_CHECK(reader.next(record), source, ":1: expected the header \"product\",\"review\",",
              "\"score\", got an empty file");
  TORCH_CHECK(record.fields == kHeader, source,
              ":1: expected the header \"product\",\"review\",\"score\" (R's write.csv of ",
              "modeldata::small_fine_foods), got ", record.fields.size(), " fields starting with '",
              record.fields.front(), "'");
  std::vector<Review> reviews;
  while (reader.next(record)) {
    TORCH_CHECK(record.fields.size() == kHeader.size(), source, ":", record.line,
                ": expected 3 fields (product, review, score), got ", record.fields.size());
    const std::string& score = record.fields[2];
    TORCH_CHECK(score == "great" || score == "other", source, ":", record.line,
                ": expected the score \"great\" or \"other\", got \"", score, "\"");
    reviews.push_back({std::move(record.fields[1]), score == "great" ? 1 : 0});
  }
  return reviews;
}

std::vector<Review> read_fine_foods_csv(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "read_fine_foods_csv: cannot open ", path,
              " (scripts/setup_bert_assets.sh exports it)");
  return parse_fine_foods_csv(in, path);
}

TrainValidationSplit split_train_validation(const std::vector<Review>& reviews,
                                            size_t validation_size, uint64_t seed) {
  TORCH_CHECK_VALUE(validation_size <= reviews.size(), "split_train_validation: expected a ",
                    "validation size of at most ", reviews.size(), " (the number of reviews), got ",
                    validation_size);
  // Fisher-Yates. j = rng() % (i + 1) rather than std::uniform_int_distribution, whose algorithm
  // differs between standard libraries; the modulo bias, below n / 2^64, does not matter here.
  std::vector<size_t> order(reviews.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::mt19937_64 rng(seed);
  for (size_t i = order.size(); i > 1; --i) {
    std::swap(order[i - 1], order[rng() % i]);
  }
  std::vector<bool> held_out(reviews.size(), false);
  for (size_t i = 0; i < validation_size; ++i) held_out[order[i]] = true;

  TrainValidationSplit split;
  split.train.reserve(reviews.size() - validation_size);
  split.validation.reserve(validation_size);
  for (size_t i = 0; i < reviews.size(); ++i) {
    (held_out[i] ? split.validation : split.train).push_back(reviews[i]);
  }
  return split;
}

}  // namespace bert
