'use strict';
// A BullMQ worker (one process) whose processor only counts each job (INCR on the counter key).
//
//   REDIS_URL=redis://127.0.0.1:PORT/0 BENCH_CONCURRENCY=50 node worker.js
//
// It connects, counts itself on the ready key, then waits for a token on the gate key
// before it starts taking jobs, so the bench can time the drain from one moment.
// SIGTERM closes it (active jobs finish first).
const { Worker } = require('bullmq');
const IORedis = require('ioredis');

const url = process.env.REDIS_URL;
const queueName = process.env.BENCH_QUEUE || 'bench';
const concurrency = Number(process.env.BENCH_CONCURRENCY || 50);
const counterKey = process.env.BENCH_COUNTER || 'bench:peers:done';
const readyKey = process.env.BENCH_READY || 'bench:peers:ready';
const gateKey = process.env.BENCH_GATE_KEY || 'bench:peers:gate';

async function main() {
  const counter = new IORedis(url);
  const connection = new IORedis(url, { maxRetriesPerRequest: null });
  const worker = new Worker(
    queueName,
    async () => {
      await counter.incr(counterKey);
    },
    { connection, concurrency, autorun: false },
  );
  worker.on('error', (err) => console.error('worker error', err));
  let closing = false;
  const close = async () => {
    if (closing) return;
    closing = true;
    await worker.close();
    connection.disconnect();
    counter.disconnect();
    process.exit(0);
  };
  process.on('SIGTERM', close);
  process.on('SIGINT', close);
  await worker.waitUntilReady();
  const gate = new IORedis(url);
  await counter.incr(readyKey);
  await gate.blpop(gateKey, 120);
  gate.disconnect();
  if (!closing) await worker.run();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
