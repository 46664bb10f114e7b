#include "quantizer_recipe.h"

#include "tquant/histogram_observer.h"
#include "tquant/observer.h"

namespace tquant::detail {

namespace {

using nlohmann::json;

const char* to_string(GradientMode mode) {
  return mode == GradientMode::kSte ? "ste" : "ste_clipped";
}

const char* to_string(NonFinitePolicy policy) {
  return policy == NonFinitePolicy::kError ? "error" : "ignore";
}

json spec_json(const QuantSpec& spec) {
  return {{"dtype", tquant::to_string(spec.dtype())},
          {"symmetric", spec.symmetric()},
          {"narrow_range", spec.narrow_range()},
          {"granularity", tquant::to_string(spec.granularity())},
          {"axis", spec.axis()},
          {"block_size", spec.block_size()}};
}

QuantSpec spec_from_json(const json& j) {
  Granularity granularity = Granularity::kPerTensor;
  const auto name = j.at("granularity").get<std::string>();
  bool known = false;
  for (auto g : {Granularity::kPerTensor, Granularity::kPerChannel, Granularity::kPerBlock}) {
    if (tquant::to_string(g) == name) {
      granularity = g;
      known = true;
    }
  }
  TORCH_CHECK_VALUE(known, "unknown granularity '", name, "'");
  return QuantSpec(quant_dtype_from_string(j.at("dtype").get<std::string>()))
      .symmetric(j.at("symmetric").get<bool>())
      .narrow_range(j.at("narrow_range").get<bool>())
      .granularity(granularity)
      .axis(j.at("axis").get<int64_t>())
      .block_size(j.at("block_size").get<int64_t>());
}

json min_max_json(const char* kind, const MinMaxObserverOptions& options) {
  return {{"observer", kind},
          {"spec", spec_json(options.spec())},
          {"eps", options.eps()},
          {"averaging_constant", options.averaging_constant()},
          {"non_finite", to_string(options.non_finite())}};
}

NonFinitePolicy policy_from_json(const json& j) {
  const auto name = j.at("non_finite").get<std::string>();
  TORCH_CHECK_VALUE(name == "error" || name == "ignore", "unknown non_finite policy '", name,
                    "'");
  return name == "error" ? NonFinitePolicy::kError : NonFinitePolicy::kIgnore;
}

MinMaxObserverOptions min_max_options(const json& j) {
  return MinMaxObserverOptions(spec_from_json(j.at("spec")))
      .eps(j.at("eps").get<double>())
      .averaging_constant(j.at("averaging_constant").get<double>())
      .non_finite(policy_from_json(j));
}

std::optional<json> observer_json(const torch::nn::Module& observer) {
  if (const auto* o = dynamic_cast<const MinMaxObserverImpl*>(&observer)) {
    return min_max_json("MinMaxObserver", o->options);
  }
  if (const auto* o = dynamic_cast<const MovingAverageMinMaxObserverImpl*>(&observer)) {
    return min_max_json("MovingAverageMinMaxObserver", o->options);
  }
  if (const auto* o = dynamic_cast<const PerChannelMinMaxObserverImpl*>(&observer)) {
    return min_max_json("PerChannelMinMaxObserver", o->options);
  }
  if (const auto* o = dynamic_cast<const MovingAveragePerChannelMinMaxObserverImpl*>(&observer)) {
    return min_max_json("MovingAveragePerChannelMinMaxObserver", o->options);
  }
  if (const auto* o = dynamic_cast<const HistogramObserverImpl*>(&observer)) {
    const auto& options = o->options;
    return json{{"observer", "HistogramObserver"},
                {"spec", spec_json(options.spec())},
                {"bins", options.bins()},
                {"max_bins", options.max_bins()},
                {"method", tquant::to_string(options.method())},
                {"percentile", options.search().percentile()},
                {"start_bin", options.search().start_bin()},
                {"stride", options.search().stride()},
                {"eps", options.eps()},
                {"non_finite", to_string(options.non_finite())},
                {"grid", tquant::to_string(options.grid())}};
  }
  return std::nullopt;
}

ObserverFactory observer_from_json(const json& j) {
  const auto kind = j.at("observer").get<std::string>();
  if (kind == "MinMaxObserver") return observer_factory<MinMaxObserver>(min_max_options(j));
  if (kind == "MovingAverageMinMaxObserver") {
    return observer_factory<MovingAverageMinMaxObserver>(min_max_options(j));
  }
  if (kind == "PerChannelMinMaxObserver") {
    return observer_factory<PerChannelMinMaxObserver>(min_max_options(j));
  }
  if (kind == "MovingAveragePerChannelMinMaxObserver") {
    return observer_factory<MovingAveragePerChannelMinMaxObserver>(min_max_options(j));
  }
  TORCH_CHECK_VALUE(kind == "HistogramObserver", "unknown observer type '", kind, "'");
  return observer_factory<HistogramObserver>(
      HistogramObserverOptions(spec_from_json(j.at("spec")))
          .bins(j.at("bins").get<int64_t>())
          .max_bins(j.at("max_bins").get<int64_t>())
          .method(calibration_method_from_string(j.at("method").get<std::string>()))
          .search(RangeSearchOptions()
                      .percentile(j.at("percentile").get<double>())
                      .start_bin(j.at("start_bin").get<int64_t>())
                      .stride(j.at("stride").get<int64_t>()))
          .eps(j.at("eps").get<double>())
          .non_finite(policy_from_json(j))
          // Files written before shared grids existed hold streaming histograms.
          .grid(histogram_grid_from_string(j.value("grid", std::string("streaming")))));
}

}  // namespace

std::optional<json> quantizer_recipe(const FakeQuantizeImpl& quantizer) {
  auto recipe = observer_json(*quantizer.observer);
  if (!recipe) return std::nullopt;
  (*recipe)["gradient"] = to_string(quantizer.options.gradient());
  (*recipe)["dynamic"] = quantizer.options.dynamic();
  if (const auto& learnable = quantizer.options.learnable()) {
    (*recipe)["learnable"] = {{"use_grad_scaling", learnable->use_grad_scaling()},
                              {"learn_zero_point", learnable->learn_zero_point()},
                              {"eps", learnable->eps()}};
  }
  return recipe;
}

namespace {

/// The recipe's LSQ settings; none in a recipe of a fixed quantizer (or a file written before
/// learnable quantizers existed).
std::optional<LearnableScaleOptions> learnable_from_json(const json& recipe) {
  if (!recipe.contains("learnable")) return std::nullopt;
  const json& j = recipe.at("learnable");
  return LearnableScaleOptions()
      .use_grad_scaling(j.at("use_grad_scaling").get<bool>())
      .learn_zero_point(j.at("learn_zero_point").get<bool>())
      .eps(j.at("eps").get<double>());
}

}  // namespace

QuantizerFactory quantizer_factory(const json& recipe, const std::string& what) {
  try {
    const auto gradient = recipe.at("gradient").get<std::string>();
    TORCH_CHECK_VALUE(gradient == "ste" || gradient == "ste_clipped", "unknown gradient '",
                      gradient, "'");
    return fake_quantize_factory(
        FakeQuantizeOptions(observer_from_json(recipe))
            .gradient(gradient == "ste" ? GradientMode::kSte : GradientMode::kSteClipped)
            .dynamic(recipe.at("dynamic").get<bool>())
            .learnable(learnable_from_json(recipe)));
  } catch (const json::exception& error) {
    C10_THROW_ERROR(ValueError, c10::str(what, ": malformed quantizer recipe ", recipe.dump(),
                                         " (", error.what(), ")"));
  } catch (const c10::Error& error) {
    C10_THROW_ERROR(ValueError, c10::str(what, ": cannot rebuild the quantizer from recipe ",
                                         recipe.dump(), ": ", error.what_without_backtrace()));
  }
}

}  // namespace tquant::detail
