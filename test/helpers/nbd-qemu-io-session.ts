// qemu-io kept open as a child process and driven line by line, so a test can change a volume's
// state between two commands on the same NBD connection.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';

export class QemuIoSession {
  private output = '';
  private waiters: Array<() => void> = [];
  private exited = false;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    const collect = (d: Buffer): void => {
      this.output += d.toString();
      for (const w of this.waiters.splice(0)) w();
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.once('exit', () => {
      this.exited = true;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Opens `uri` (raw format; extra qemu-io arguments before it). */
  static open(uri: string, args: string[] = []): QemuIoSession {
    return new QemuIoSession(spawn('qemu-io', ['-f', 'raw', ...args, uri], { stdio: ['pipe', 'pipe', 'pipe'] }));
  }

  /** Runs one qemu-io command; resolves with the output it produced once `until` appears in it. */
  async run(command: string, until: RegExp, timeoutMs = 10_000): Promise<string> {
    const start = this.output.length;
    this.child.stdin.write(`${command}\n`);
    const deadline = Date.now() + timeoutMs;
    while (!until.test(this.output.slice(start))) {
      if (this.exited) throw new Error(`qemu-io exited during ${JSON.stringify(command)}:\n${this.output}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`qemu-io: no ${until} after ${JSON.stringify(command)}:\n${this.output}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.output.slice(start);
  }

  /** Quits (killing qemu-io if it does not exit within a few seconds). */
  async close(): Promise<void> {
    if (this.exited) return;
    this.child.stdin.end('quit\n');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await new Promise<void>((resolve) => {
      if (this.exited) resolve();
      else this.child.once('exit', () => resolve());
    });
    clearTimeout(timer);
  }
}
