'use strict';
// Adds N no-op jobs to a BullMQ queue from this one process and prints one JSON line.
//
//   REDIS_URL=redis://127.0.0.1:PORT/0 node enqueue.js add 20000     # await queue.add() one at a time
//   REDIS_URL=redis://127.0.0.1:PORT/0 node enqueue.js bulk 20000    # queue.addBulk() in chunks of 1000
//
// The clock runs from after the queue's connection is ready to after the last add.
const { Queue } = require('bullmq');
const IORedis = require('ioredis');

const url = process.env.REDIS_URL;
const queueName = process.env.BENCH_QUEUE || 'bench';
const [mode = 'add', jobsArg = '1000', chunkArg = '1000'] = process.argv.slice(2);
const jobs = Number(jobsArg);
const chunk = Number(chunkArg);

async function main() {
  const connection = new IORedis(url, { maxRetriesPerRequest: null });
  const queue = new Queue(queueName, { connection });
  await queue.waitUntilReady();
  const started = process.hrtime.bigint();
  if (mode === 'bulk') {
    for (let i = 0; i < jobs; i += chunk) {
      const n = Math.min(chunk, jobs - i);
      await queue.addBulk(Array.from({ length: n }, () => ({ name: 'noop', data: {} })));
    }
  } else {
    for (let i = 0; i < jobs; i++) {
      await queue.add('noop', {});
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await queue.close();
  connection.disconnect();
  console.log(JSON.stringify({ peer: 'bullmq', mode, jobs, rate: Math.round((jobs / seconds) * 10) / 10 }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
