#pragma once

#include <map>
#include <set>
#include <string>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "bert_model.h"
#include "tquant/safetensors.h"

namespace bert {

/// Checkpoint tensors of Hugging Face BertModel files that the C++ model has no use for:
/// "embeddings.position_ids" (the buffer arange(max_position_embeddings), recomputed in
/// forward). The pooler's "pooler.dense.weight" and "pooler.dense.bias" are skipped only when
/// the model was built without a pooler.
extern const std::set<std::string> kUnusedCheckpointKeys;

/// The float state of a module: its parameters and buffers by qualified name, except those of
/// tquant quantizers (FakeQuantize and LearnableFakeQuantize children and their observers).
/// These are the tensors a Hugging Face checkpoint or a saved classifier holds; the tensors
/// returned share storage with the module's.
///
/// Example:
///   tquant::write_safetensors("tiny.safetensors", bert::float_state(*model));
std::map<std::string, at::Tensor> float_state(const torch::nn::Module& module);

/// Copies `tensors` into float_state(module) after checking everything first (on any problem
/// the module is left unchanged): every model tensor has a tensor of the same name and shape;
/// floating-point model tensors take F16 / BF16 / F32 / F64 tensors, converted to the model's
/// dtype and device, other model tensors need the same dtype; every tensor is used, except
/// those named in `unused`. The error lists the problems ("missing tensor", "unexpected
/// tensor", "expected shape ..., got ...", "expected dtype ..., got ..."), each naming the
/// key; `what` names the source.
void load_float_state(torch::nn::Module& module, const std::map<std::string, at::Tensor>& tensors,
                      const std::set<std::string>& unused, const std::string& what);

/// Loads a Hugging Face BertModel checkpoint (the keys of transformers' BertModel:
/// "embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight", ...)
/// into `model` with load_float_state, skipping kUnusedCheckpointKeys and, for a model without
/// pooler, the pooler's tensors. `path` is a model.safetensors file or a directory holding one.
///
/// Example:
///   bert::BertModel model(bert::read_bert_config(dir), /*add_pooler=*/false);
///   bert::load_bert_checkpoint(*model, dir);
void load_bert_checkpoint(BertModelImpl& model, const std::string& path);
/// The same from a safetensors image already read (`what` names it in errors).
void load_bert_checkpoint(BertModelImpl& model, const tquant::SafetensorsFile& file,
                          const std::string& what);
/// Loads the encoder of `classifier` (its "bert" child); the classifier head is left as it is.
void load_bert_checkpoint(BertClassifierImpl& classifier, const std::string& path);

/// Saves the float state of a (fine-tuned) classifier, encoder and head, to a safetensors file;
/// the metadata records the format ("tquant_bert.format" = "BertClassifier"), num_labels and hidden_size.
/// Quantizer state is not saved (use tquant::save_state for a calibrated model).
///
/// Example:
///   bert::save_classifier(*classifier, "build/fine_foods_classifier.safetensors");
///   ...  // a later run:
///   bert::BertClassifier classifier(config, 2);
///   bert::load_classifier(*classifier, "build/fine_foods_classifier.safetensors");
void save_classifier(const BertClassifierImpl& classifier, const std::string& path);

/// Loads a file written by save_classifier: the format must match and the tensors must be
/// exactly the classifier's float state (same names, shapes; dtypes as load_float_state).
void load_classifier(BertClassifierImpl& classifier, const std::string& path);

}  // namespace bert
