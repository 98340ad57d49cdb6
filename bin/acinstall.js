#!/usr/bin/env node
import '../dist/installer/main.js';
