// Distributed calibration and data-parallel QAT of the BERT example's classifier
// (all-MiniLM-L6-v2 on fine-food reviews, examples/bert), on the c10d group of torchrun or
// tquant_launch (docs/distributed.md):
//   1. every rank calibrates on its own contiguous part of the calibration reviews, then
//      tquant::calibrate_distributed syncs the observers before the ranges freeze. The
//      activation histograms use a shared grid (HistogramGrid::kShared): a range pass, the
//      ranges synced, one grid fixed from them, a counting pass, the counts summed;
//   2. rank 0 checks every quantizer against one process calibrating on all the reviews with
//      the same options: scale and zero point bit-equal (with --streaming-histograms, the
//      one-pass histograms, whose ranges only come close: the gaps are printed);
//   3. a few data-parallel QAT steps (each rank its own reviews, gradients averaged in
//      buckets), then every parameter and buffer is checked bit-identical across ranks.
// Usage (2 ranks):
//   torchrun --no-python --nproc-per-node 2 build/examples/distributed/tquant_distributed_bert
//   build/examples/distributed/tquant_launch --nproc-per-node 2
//       build/examples/distributed/tquant_distributed_bert   (one line)
// Options: those of the BERT demo (--model-dir, --data-dir, --quick, --seed, ...; sizes from
// its quick / full settings: calibration reviews, batch size, sequence length), plus
// --qat-steps N (default 3), --no-check (skip the one-process comparison) and
// --streaming-histograms (one-pass histograms instead of the shared grid).
#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bert_checkpoint.h"
#include "bert_config.h"
#include "bert_model.h"
#include "demo_data.h"
#include "demo_options.h"
#include "fine_foods.h"
#include "tquant/distributed.h"
#include "tquant/histogram_observer.h"
#include "tquant/qconfig.h"
#include "tquant/qconfig_mapping.h"
#include "tquant/quantize.h"
#include "wordpiece_tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Options of this example that the BERT demo does not have; removed from argv.
struct ExtraOptions {
  int64_t qat_steps = 3;
  bool check = true;
  tquant::HistogramGrid grid = tquant::HistogramGrid::kShared;
};

ExtraOptions take_extra_options(int& argc, char** argv) {
  ExtraOptions extra;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--qat-steps" && i + 1 < argc) {
      extra.qat_steps = std::stoll(argv[++i]);
    } else if (arg == "--no-check") {
      extra.check = false;
    } else if (arg == "--streaming-histograms") {
      extra.grid = tquant::HistogramGrid::kStreaming;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  return extra;
}

/// The classifier with the pretrained encoder; the head is seeded, so every rank (and the
/// one-process reference) starts from the same weights.
bert::BertClassifier make_model(const bert::DemoOptions& options, tquant::HistogramGrid grid) {
  torch::manual_seed(static_cast<int64_t>(options.seed));
  bert::BertClassifier model(bert::read_bert_config(options.model_dir), 2);
  bert::load_bert_checkpoint(*model, options.model_dir);
  model->eval();  // dropout off, as in the BERT demo's QAT
  // The BERT demo's static int8 scheme for the encoder: histogram (percentile) activations,
  // per-channel min-max weights; the histograms on a shared grid unless --streaming-histograms.
  tquant::prepare(*model, tquant::QConfigMapping().set_module_name_pattern(
                              "bert.encoder.*", tquant::int8_static_qconfig(
                                  tquant::PresetOptions().histogram_grid(grid))));
  return model;
}

/// Consecutive batches of `batch_size` reviews of `set`.
std::vector<std::vector<size_t>> consecutive_batches(size_t begin, size_t end, int64_t batch_size) {
  std::vector<std::vector<size_t>> batches;
  for (size_t i = begin; i < end; i += static_cast<size_t>(batch_size)) {
    std::vector<size_t> batch;
    for (size_t j = i; j < std::min(end, i + static_cast<size_t>(batch_size)); ++j) batch.push_back(j);
    batches.push_back(batch);
  }
  return batches;
}

void observe(bert::BertClassifier& model, const bert::EncodedSet& set,
             const std::vector<std::vector<size_t>>& batches) {
  for (const auto& indices : batches) {
    const bert::DemoBatch batch = bert::make_batch(set, indices);
    model->forward(batch.input_ids, batch.token_type_ids, batch.attention_mask);
  }
}

/// Compares every quantizer of `model` with the same quantizer of `reference`: scale and zero
/// point must be bit-equal, except for streaming histograms, whose amax gaps (in bins of the
/// one-process grid) are printed instead. Returns the failures.
int compare_ranges(bert::BertClassifier& model, bert::BertClassifier& reference) {
  std::map<std::string, tquant::FakeQuantizeImpl*> theirs;
  for (const auto& item : reference->named_modules()) {
    if (auto* fq = dynamic_cast<tquant::FakeQuantizeImpl*>(item.value().get())) theirs[item.key()] = fq;
  }
  int min_max_equal = 0, min_max_total = 0, hist_equal = 0, hist_total = 0;
  double worst_bins = 0;
  bool streaming = false;
  int failures = 0;
  for (const auto& item : model->named_modules()) {
    auto* mine = dynamic_cast<tquant::FakeQuantizeImpl*>(item.value().get());
    if (mine == nullptr) continue;
    tquant::FakeQuantizeImpl* other = theirs.at(item.key());
    const bool equal = at::equal(mine->qparams().scale, other->qparams().scale) &&
                       at::equal(mine->qparams().zero_point, other->qparams().zero_point);
    auto* hist = dynamic_cast<tquant::HistogramObserverImpl*>(mine->observer.get());
    if (hist == nullptr) {
      ++min_max_total;
      min_max_equal += equal ? 1 : 0;
    } else {
      ++hist_total;
      hist_equal += equal ? 1 : 0;
      auto* ref = dynamic_cast<tquant::HistogramObserverImpl*>(other->observer.get());
      const auto method = hist->options.method();
      const double gap = (hist->compute_amax(method).to(at::kDouble) -
                          ref->compute_amax(method).to(at::kDouble)).abs().max().item<double>();
      worst_bins = std::max(worst_bins, gap / ref->bin_width.max().item<double>());
      if (hist->options.grid() == tquant::HistogramGrid::kStreaming) {
        streaming = true;
        continue;  // no bit-equality promised (docs/distributed.md)
      }
    }
    if (!equal) {
      ++failures;
      std::cout << "  DIFFERS: " << item.key() << " (scale / zero point)\n";
    }
  }
  std::cout << "  min-max quantizers bit-equal to one process: " << min_max_equal << " / "
            << min_max_total << "\n"
            << "  histogram quantizers (" << (streaming ? "streaming" : "shared grid")
            << "): scale and zero point bit-equal " << hist_equal << " / " << hist_total
            << " (largest amax gap " << std::setprecision(3) << worst_bins << " bins)\n";
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const ExtraOptions extra = take_extra_options(argc, argv);
    bool help = false;
    bert::DemoOptions options = bert::parse_demo_options(argc, argv, &help);
    if (help) {
      std::cout << bert::demo_usage() << "  --qat-steps   data-parallel QAT steps (default 3)\n"
                << "  --no-check    skip the one-process comparison on rank 0\n"
                << "  --streaming-histograms  one-pass histograms instead of the shared grid\n";
      return 0;
    }
    auto env = tquant::process_group_from_env();
    const tquant::DistributedGroup& group = env.group;
    const int world = group.world_size();
    const int rank = group.rank();
    const bool lead = rank == 0;
    auto say = [&](const std::string& text) {
      if (lead) std::cout << text << std::endl;
    };
    say("tquant distributed BERT example: " + std::to_string(world) + " rank(s), " +
        std::to_string(torch::get_num_threads()) + " intra-op thread(s) per rank");

    // Calibration reviews, then the reviews of the QAT steps (world x batch per step).
    auto reviews = bert::read_fine_foods_csv(options.data_dir + "/fine_foods_train.csv");
    const size_t calibration = static_cast<size_t>(options.calibration_reviews);
    const size_t per_step = static_cast<size_t>(world * options.batch_size);
    const size_t needed = calibration + per_step * static_cast<size_t>(extra.qat_steps);
    TORCH_CHECK(reviews.size() >= needed, "need ", needed, " reviews, the CSV has ", reviews.size());
    reviews.resize(needed);
    const auto tokenizer = bert::WordPieceTokenizer::from_pretrained(options.model_dir);
    const bert::EncodedSet set = bert::encode_reviews(tokenizer, reviews, options.seq_len, "reviews");

    // 1. Calibration: rank r observes the r-th contiguous part of the calibration batches (a
    // shared grid does not care which; streaming histograms take their first grid from rank
    // 0's first batch, the one-process run's first batch).
    const auto batches = consecutive_batches(0, calibration, options.batch_size);
    const size_t begin = batches.size() * rank / world;
    const size_t end = batches.size() * (rank + 1) / world;
    const std::vector<std::vector<size_t>> mine(batches.begin() + begin, batches.begin() + end);
    bert::BertClassifier model = make_model(options, extra.grid);
    tquant::broadcast_parameters_and_buffers(*model, group);
    auto start = Clock::now();
    {
      torch::NoGradGuard no_grad;
      tquant::calibrate_distributed(*model, group, [&] { observe(model, set, mine); });
    }
    const double calibration_s = since(start);
    std::ostringstream line;
    line << "1. calibration: " << batches.size() << " batches of " << options.batch_size
         << " reviews (seq " << options.seq_len << "), " << mine.size()
         << " on rank 0, synced: " << std::fixed << std::setprecision(2) << calibration_s << " s";
    say(line.str());
    std::string difference = tquant::find_replica_difference(*model, group);
    say(std::string("   ranges identical on every rank: ") + (difference.empty() ? "yes" : "NO, " + difference));
    int failures = difference.empty() ? 0 : 1;

    // 2. The one-process run, for comparison (rank 0 only; the others wait at the next step).
    if (extra.check && lead) {
      bert::BertClassifier reference = make_model(options, extra.grid);
      start = Clock::now();
      {
        torch::NoGradGuard no_grad;
        tquant::calibrate(*reference, [&] { observe(reference, set, batches); });
      }
      std::cout << "2. one process on all " << batches.size() << " batches: " << std::fixed
                << std::setprecision(2) << since(start) << " s; ranges compared:\n";
      failures += compare_ranges(model, reference);
    }

    // 3. Data-parallel QAT with the synced, frozen ranges.
    torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(options.qat_lr));
    start = Clock::now();
    for (int64_t step = 0; step < extra.qat_steps; ++step) {
      const size_t first = calibration + step * per_step + rank * options.batch_size;
      const auto indices = consecutive_batches(first, first + options.batch_size, options.batch_size)[0];
      const bert::DemoBatch batch = bert::make_batch(set, indices);
      optimizer.zero_grad();
      auto logits = model->forward(batch.input_ids, batch.token_type_ids, batch.attention_mask);
      auto loss = torch::nn::functional::cross_entropy(logits, batch.labels);
      loss.backward();
      tquant::average_gradients(*model, group);
      optimizer.step();
      std::ostringstream step_line;
      step_line << "   QAT step " << step + 1 << ": rank 0 loss " << std::fixed
                << std::setprecision(4) << loss.item<double>();
      say(step_line.str());
    }
    const double qat_s = since(start);
    difference = tquant::find_replica_difference(*model, group);
    std::ostringstream qat_line;
    qat_line << "3. " << extra.qat_steps << " data-parallel QAT steps (" << world << " x "
             << options.batch_size << " reviews each): " << std::fixed << std::setprecision(2)
             << qat_s << " s; every parameter and buffer identical on every rank: "
             << (difference.empty() ? "yes" : "NO, " + difference);
    say(qat_line.str());
    failures += difference.empty() ? 0 : 1;
    say(failures == 0 ? "OK" : "FAILED (" + std::to_string(failures) + " problems)");
    return failures == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "tquant_distributed_bert: " << e.what() << "\n";
    return 1;
  }
}
