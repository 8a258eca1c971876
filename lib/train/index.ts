/**
 * Training: AdamW with f32 masters and global-norm clipping, LR schedules, EMA, losses, the shared training
 * step (accumulation, seeded randomness, atomic resumable checkpoints), LoRA training and kohya export,
 * datasets (image folder, latent cache, the procedural shapes set) and the teacher trained from scratch.
 * @example
 * const lora = new TrainableLora(unet.params, 'unet', { rank: 64 });
 * const trainer = new Trainer({ trainables: lora.trainables(), lr: 1e-4, schedule: 'warmup' });
 * await trainer.trainStep(() => mse(unet.forward(inputs), target));
 * await lora.exportKohya('my-lora.safetensors');
 */
export { AdamW, globalNorm, assignInPlace, type AdamWOptions, type StepInfo } from './optimizer';
export { lrSchedule, SCHEDULE_KINDS, type ScheduleKind, type ScheduleOptions, type LrSchedule } from './schedule';
export { EMA } from './ema';
export { mse, pseudoHuber, gaussianKl, gaussianSample } from './losses';
export { Trainer, type TrainerOptions, type StepLog } from './trainer';
export { saveCheckpoint, loadCheckpoint, type TrainingState, type LoadedCheckpoint } from './checkpoint';
export { Rng, DataOrder, hashSeed } from './rng';
export { TrainableLora, DEFAULT_LORA_TARGETS, type LoraTrainOptions, type TrainableLoraModule } from './lora';
export { storeStateDict, writeDiffusersPipeline, type PipelineParts } from './export';
export { ImageFolderDataset, resizeCenterCrop, resize, imagesToNCHW } from './image_folder';
export { buildLatentCache, encodeDataset, LatentCache, type ImageSource } from './latent_cache';
export { shapeSample, randomScene, renderScene, caption, readColours, COLOURS, COLOUR_NAMES, SHAPE_NAMES } from './shapes';
export { buildVocab, writeTokenizerFolder, type BuiltVocab } from './vocab';
export { trainTeacher, evaluateTeacher, teacherConfigs, initForTraining, type TeacherOptions, type TeacherReport, type Evaluation } from './teacher';
