#include "fine_foods.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <unistd.h>

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

namespace {

// gtest assertion: `text` contains `part` (the examples link gtest only, not gmock).
::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected a message containing\n  " << part << "\ngot\n  " << text;
}

const std::string kHeader = "\"product\",\"review\",\"score\"\n";

std::vector<bert::Review> parse(const std::string& csv) {
  std::istringstream in(csv);
  return bert::parse_fine_foods_csv(in, "fixture.csv");
}

// The message of the c10::Error that `parse(csv)` throws, or "no error".
std::string parse_error(const std::string& csv) {
  try {
    parse(csv);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "no error";
}

TEST(FineFoodsCsv, ReadsQuotedFieldsWithDoubledQuotesCommasAndNewlines) {
  const std::string csv = kHeader +
                          "\"B001\",\"Plain text.\",\"great\"\n"
                          "\"B002\",\"She said \"\"wow\"\", then left, sadly.\",\"other\"\n"
                          "\"B003\",\"Line one\nline two\n\nline four\",\"great\"\n"
                          "\"B004\",\"\",\"other\"\n";
  const auto reviews = parse(csv);
  ASSERT_EQ(reviews.size(), 4u);
  EXPECT_EQ(reviews[0].text, "Plain text.");
  EXPECT_EQ(reviews[0].label, 1);
  EXPECT_EQ(reviews[1].text, "She said \"wow\", then left, sadly.");
  EXPECT_EQ(reviews[1].label, 0);
  EXPECT_EQ(reviews[2].text, "Line one\nline two\n\nline four");
  EXPECT_EQ(reviews[2].label, 1);
  EXPECT_EQ(reviews[3].text, "");
  EXPECT_EQ(reviews[3].label, 0);
}

TEST(FineFoodsCsv, AcceptsCrlfUnquotedFieldsAndMissingFinalNewline) {
  const auto reviews = parse(
      "\"product\",\"review\",\"score\"\r\nB001,Tasty,great\r\n"
      "\"B002\",\"Caf\xC3\xA9 \xE2\x98\x95\",other");
  ASSERT_EQ(reviews.size(), 2u);
  EXPECT_EQ(reviews[0].text, "Tasty");
  EXPECT_EQ(reviews[0].label, 1);
  EXPECT_EQ(reviews[1].text, "Caf\xC3\xA9 \xE2\x98\x95");
  EXPECT_EQ(reviews[1].label, 0);
}

TEST(FineFoodsCsv, HeaderOnlyGivesNoReviews) { EXPECT_TRUE(parse(kHeader).empty()); }

TEST(FineFoodsCsv, WrongHeaderIsAnError) {
  EXPECT_TRUE(Contains(parse_error("\"product\",\"text\",\"score\"\n"),
                       "fixture.csv:1: expected the header \"product\",\"review\",\"score\""));
  EXPECT_TRUE(Contains(parse_error(""), "fixture.csv:1: expected the header"));
}

TEST(FineFoodsCsv, ErrorsNameTheLineAfterMultiLineRecords) {
  // The bad record starts on line 4: the review of line 2 spans lines 2 and 3.
  const std::string csv = kHeader + "\"B001\",\"two\nlines\",\"great\"\n\"B002\",\"no score\"\n";
  EXPECT_TRUE(Contains(parse_error(csv),
                       "fixture.csv:4: expected 3 fields (product, review, score), got 2"));
}

TEST(FineFoodsCsv, BlankLineIsAnError) {
  EXPECT_TRUE(
      Contains(parse_error(kHeader + "\"B001\",\"ok\",\"great\"\n\n\"B002\",\"ok\",\"other\"\n"),
               "fixture.csv:3: expected 3 fields (product, review, score), got 1"));
}

TEST(FineFoodsCsv, UnknownScoreIsAnError) {
  EXPECT_TRUE(
      Contains(parse_error(kHeader + "\"B001\",\"ok\",\"5 stars\"\n"),
               "fixture.csv:2: expected the score \"great\" or \"other\", got \"5 stars\""));
}

TEST(FineFoodsCsv, BrokenQuotingIsAnError) {
  EXPECT_TRUE(Contains(parse_error(kHeader + "\"B001\",\"never closed,great\n"),
                       "fixture.csv:2: expected a closing quote for the field that starts here, "
                       "got the end of the file"));
  EXPECT_TRUE(Contains(parse_error(kHeader + "\"B001\",\"closed\"early\",\"great\"\n"),
                       "fixture.csv:2: expected ',' or the end of the line after a closing "
                       "quote, got 'e'"));
  EXPECT_TRUE(Contains(parse_error(kHeader + "B001,say \"hi\",great\n"),
                       "fixture.csv:2: expected a quote only at the start of a field"));
}

TEST(FineFoodsCsv, ReadsAFileAndNamesAMissingOne) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("tquant_fine_foods_" + std::to_string(::getpid()) + ".csv");
  {
    std::ofstream out(path, std::ios::binary);
    out << kHeader << "\"B001\",\"Yum\",\"great\"\n";
  }
  const auto reviews = bert::read_fine_foods_csv(path.string());
  std::filesystem::remove(path);
  ASSERT_EQ(reviews.size(), 1u);
  EXPECT_EQ(reviews[0].text, "Yum");

  try {
    bert::read_fine_foods_csv(path.string());
    FAIL() << "expected an error for the missing file " << path;
  } catch (const c10::Error& e) {
    EXPECT_TRUE(Contains(e.what_without_backtrace(), "cannot open " + path.string()));
  }
}

std::vector<bert::Review> numbered_reviews(int count) {
  std::vector<bert::Review> reviews;
  for (int i = 0; i < count; ++i) reviews.push_back({"review " + std::to_string(i), i % 2});
  return reviews;
}

TEST(FineFoodsSplit, PartitionsKeepingInputOrder) {
  const auto reviews = numbered_reviews(33);
  const auto split = bert::split_train_validation(reviews, 7, 0);
  ASSERT_EQ(split.train.size(), 26u);
  ASSERT_EQ(split.validation.size(), 7u);
  std::set<std::string> seen;
  for (const auto* part : {&split.train, &split.validation}) {
    int previous = -1;
    for (const auto& review : *part) {
      const int index = std::stoi(review.text.substr(7));
      EXPECT_GT(index, previous) << "each part keeps the input order";
      previous = index;
      EXPECT_EQ(review.label, index % 2);
      EXPECT_TRUE(seen.insert(review.text).second) << review.text << " is in both parts";
    }
  }
  EXPECT_EQ(seen.size(), reviews.size());
}

TEST(FineFoodsSplit, SameSeedSameSplitOtherSeedOtherSplit) {
  const auto reviews = numbered_reviews(65);
  const auto texts = [](const std::vector<bert::Review>& part) {
    std::vector<std::string> out;
    for (const auto& review : part) out.push_back(review.text);
    return out;
  };
  const auto a = bert::split_train_validation(reviews, 17, 42);
  const auto b = bert::split_train_validation(reviews, 17, 42);
  const auto c = bert::split_train_validation(reviews, 17, 43);
  EXPECT_EQ(texts(a.validation), texts(b.validation));
  EXPECT_NE(texts(a.validation), texts(c.validation));
  // A shuffle, not the first or last rows.
  EXPECT_NE(texts(a.validation),
            texts(std::vector<bert::Review>(reviews.begin(), reviews.begin() + 17)));
  EXPECT_NE(texts(a.validation),
            texts(std::vector<bert::Review>(reviews.end() - 17, reviews.end())));
}

TEST(FineFoodsSplit, EdgeSizes) {
  const auto reviews = numbered_reviews(3);
  EXPECT_EQ(bert::split_train_validation(reviews, 0, 1).train.size(), 3u);
  EXPECT_EQ(bert::split_train_validation(reviews, 3, 1).validation.size(), 3u);
  EXPECT_THROW(bert::split_train_validation(reviews, 4, 1), c10::ValueError);
}

// The exported data set itself, when TQUANT_BERT_DATA_DIR names the folder that
// scripts/setup_bert_assets.sh filled.
TEST(FineFoodsCsv, ReadsTheExportedDataSet) {
  const char* dir = std::getenv("TQUANT_BERT_DATA_DIR");
  if (dir == nullptr || !std::filesystem::exists(std::string(dir) + "/fine_foods_test.csv")) {
    GTEST_SKIP() << "set TQUANT_BERT_DATA_DIR to the folder of fine_foods_{train,test}.csv "
                    "(scripts/setup_bert_assets.sh) to read the real data";
  }
  const auto train = bert::read_fine_foods_csv(std::string(dir) + "/fine_foods_train.csv");
  const auto test = bert::read_fine_foods_csv(std::string(dir) + "/fine_foods_test.csv");
  EXPECT_EQ(train.size(), 4000u);
  EXPECT_EQ(test.size(), 1000u);
  int great = 0;
  for (const auto& review : test) great += review.label;
  EXPECT_GT(great, 0);
  EXPECT_LT(great, 1000);
  const auto split = bert::split_train_validation(train, 500, 0);
  EXPECT_EQ(split.train.size(), 3500u);
  EXPECT_EQ(split.validation.size(), 500u);
}

}  // namespace
