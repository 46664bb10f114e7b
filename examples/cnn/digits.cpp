#include "digits.h"

#include <fstream>

#include <torch/torch.h>

#include "tquant/safetensors.h"

namespace tquant_cnn {

Digits load_digits(const std::string& path, int64_t test_count) {
  TORCH_CHECK_VALUE(std::ifstream(path).good(), "CNN example: expected the digits at '", path,
                    "'; create them with scripts/setup_cnn_assets.sh (or pass --data PATH)");
  const auto file = tquant::read_safetensors(path);
  TORCH_CHECK_VALUE(file.tensors.count("images") == 1 && file.tensors.count("labels") == 1,
                    "CNN example: expected tensors 'images' and 'labels' in '", path, "'");
  const at::Tensor images = file.tensors.at("images");
  const at::Tensor labels = file.tensors.at("labels");
  TORCH_CHECK_VALUE(images.dim() == 3 && images.size(1) == 8 && images.size(2) == 8 &&
                        images.scalar_type() == at::kFloat && labels.dim() == 1 &&
                        labels.size(0) == images.size(0) && labels.scalar_type() == at::kLong,
                    "CNN example: expected images F32 [N, 8, 8] and labels I64 [N] in '", path,
                    "', got ", images.sizes(), " and ", labels.sizes());
  const int64_t count = images.size(0);
  TORCH_CHECK_VALUE(test_count > 0 && test_count < count, "CNN example: cannot hold out ",
                    test_count, " of ", count, " digits");
  torch::manual_seed(2024);
  const at::Tensor order = torch::randperm(count);
  const at::Tensor train_index = order.slice(0, test_count);
  const at::Tensor test_index = order.slice(0, 0, test_count);
  const at::Tensor train_images = images.index_select(0, train_index);
  const at::Tensor mean = train_images.mean();
  const at::Tensor std = train_images.std();
  const auto standardize = [&](const at::Tensor& x) {
    return ((x - mean) / std).unsqueeze(1).contiguous();
  };
  Digits digits;
  digits.train = {standardize(train_images), labels.index_select(0, train_index)};
  digits.test = {standardize(images.index_select(0, test_index)),
                 labels.index_select(0, test_index)};
  return digits;
}

}  // namespace tquant_cnn
