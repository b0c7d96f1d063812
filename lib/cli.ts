/**
 * `npx tokensieve info` (and help). `npx tokensieve bench` is dispatched by
 * bin/tokensieve.js to dist/bench/run.js: the library does not import its
 * benchmarks.
 */
import { info, splitReason } from './device';

const HELP = `Usage: tokensieve <command> [options]

Commands:
  info [--json]     version, build flags, CPU and CUDA state (and why CUDA is unavailable)
  bench [options]   microbenchmarks with work, roof fraction and baselines (bench --help)
  help              this text
`;

function formatBytes(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(0)} MiB`;
}

export function printInfo(json: boolean): void {
  const i = info();
  if (json) {
    process.stdout.write(`${JSON.stringify(i, null, 2)}\n`);
    return;
  }
  const lines = [
    `tokensieve ${i.version}`,
    `  binary:        ${i.binary}`,
    `  build:         ${i.build.buildType}, ${i.build.compiler}, CPU kernels: ${i.build.cpuIsas.join(' + ')}`,
    `  CUDA build:    ${i.build.cudaCompiled ? `CUDA ${i.build.cudaCompiledVersion}, archs ${i.build.cudaArchitectures.join(' ')}` : 'no (CPU-only build)'}`,
    `  CPU:           ${i.cpu.isa} kernels, ${i.cpu.threads} threads (default ${i.cpu.defaultThreads})`,
    `  CUDA runtime:  ${i.cuda.runtimeVersion || '-'}   driver: ${i.cuda.driverVersion || 'none'}`,
    `  CUDA:          ${i.cuda.available ? 'available' : `not available: ${splitReason(i.cuda.reason).why}`}`,
  ];
  for (const d of i.cuda.devices) {
    lines.push(
      `    cuda:${d.ordinal}  ${d.name}, sm_${d.capability.replace('.', '')}, ${formatBytes(d.totalMemory)}, ${d.multiprocessors} SMs` +
        (d.kernelsAvailable ? '' : `  (cannot run this build: ${d.kernelsReason})`),
    );
  }
  if (!i.cuda.available) {
    lines.push(
      '',
      `Nothing needs doing: tokensieve runs every kernel and method on its CPU kernels (${i.cpu.isa}, ${i.cpu.threads} threads).`,
      `CUDA matters only for tensors on a GPU (Tensor.to('cuda:0'))${splitReason(i.cuda.reason).fix ? `; to use one: ${splitReason(i.cuda.reason).fix}` : ''}.`,
    );
  } else {
    lines.push('', i.summary);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'info':
      printInfo(rest.includes('--json'));
      return 0;
    case 'bench':
      process.stderr.write('tokensieve: bench is run by the tokensieve command (bin/tokensieve.js), not by the library\n');
      return 1;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(HELP);
      return cmd === undefined ? 1 : 0;
    case '--version':
    case '-v':
      process.stdout.write(`${info().version}\n`);
      return 0;
    default:
      process.stderr.write(`tokensieve: unknown command '${cmd}'\n\n${HELP}`);
      return 1;
  }
}
