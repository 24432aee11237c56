"""The auxiliary networks: identity AlexNet, age classifier and the independent age evaluator.

`train.train_classifier(config, workdir)` trains the network of `config.task` (run by
`ipcgan_jax.tasks.train_and_evaluate`, so `main.py` runs it):

- 'alexnet_identity': AlexNet (conv1..conv5, fc6, fc7) with the identity head
  new_1 -> new_2 on identity labels, from `config.init.bvlc_npy` (ImageNet weights) or from
  scratch. new_2 has `model.alexnet.num_identities` outputs (the GAN checks that shape);
  the training split's K identities take labels 0..K-1, so K must not exceed it. Identity
  accuracy needs faces of identities seen in training, so the test set is a per-image
  held-out part of the training split (`holdout_fraction` of every identity's images,
  seeded; an identity with one image keeps it for training).
- 'age_classifier': the age head age_fc6 -> age_fc7 -> age_fc8 on pool5 of the frozen
  identity trunk (`config.frozen.alexnet`), on age groups, AlexNet input scaling
  (docs/faithfulness.md §8).
- 'age_evaluator': `ipcgan_jax.models.AgeEvaluator`, a small ResNet with its own input
  scaling ([-1, 1]) and seed, used only to grade generated faces (`ipcgan_jax.age_evaluator`).
  `class_weighting='balanced'` weighs every age group the same in its loss (for
  unbalanced data such as UTKFace; `tasks.balanced_class_weights`); 'none' is the plain mean.

Dropout (`model.dropout_rate`) acts on fc6/fc7 or age_fc6/age_fc7 during training only.
Age tasks are tested on `data.test_split` (identity-disjoint for CACD's default split and
the synthetic faces).

Outputs in WORKDIR: checkpoints/ (resumable: rerunning the command continues), metrics.jsonl
and tensorboard/ (train/..., eval/...), report/ (metrics.json, confusion_matrix.json and
.png on the test set), and export/ (`checkpointing.save_variables`), what the GAN and the
evaluation read:
  alexnet_identity -> {"params": conv1..conv5, fc6, fc7, new_1, new_2}
  age_classifier   -> {"params": age_fc6, age_fc7, age_fc8}
  age_evaluator    -> {"params", "batch_stats"}, metadata["architecture"] (see
                      `ipcgan_jax.age_evaluator`).

  heads     the identity and age heads as Flax modules
  tasks     what differs between the three networks (`ClassifierTask`)
  sources   the faces a task trains and tests on (per-image hold-out for identities)
  train     the trainer: state, optimizer, step, test, export
  reports   the test report: metrics, confusion matrix as JSON and picture
"""
