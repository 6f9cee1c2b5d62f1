"""Task preprocessing in parts: `task` (TaskPreprocessing, fitting, ModelInputs), `epochs`, `recordings`;
`finetune.preprocessing` describes it and re-exports the public names."""
